"""The demo night through Airflow's distributed engine: CeleryExecutor, Redis, PostgreSQL, separate processes.

The same simulated decam-mini night as ``make demo`` (5 exposures in g and r, seed 2026, one cloudy) is
triggered through the REST API of the Celery tier (``tests/fixtures/celery.py``); the archive must hold what
the embedded run gives (``tests/e2e/test_nightly_demo.py``'s expectations: 4 accepted, the cloudy exposure
quarantined for its zeropoint, 5 raws, 20 CCD images with lineage to their raw, every file's checksum
verified), the batch and transfer tasks must have run on the ``site_local`` worker and the rest on the
``default`` one (``task_instance.queue`` and ``hostname`` in the metadata DB), and the night's deadline
(12:00 UTC the next day, long past) must be recorded as a miss in the archive by the Deadline Alert.

After the night, on the same running services, a small ``reprocess_campaign`` (2 of the night's accepted
exposures, one chunk of 2, ``single_epoch.detect_thresh`` changed, target version ``v2``) is triggered over the
REST API with the form's fields as ``conf``, approved (and any borderline item accepted) through the HITL REST
API; the campaign must end ``done`` with both items done, their 24 products registered as ``v2`` superseding
the ``v1`` ones (the other exposures untouched), the new runs naming the campaign, every checksum verified,
and the job-array tasks (submit and watch) on the ``site_local`` worker, the rest on ``default``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.support import need_binary

pytestmark = [pytest.mark.celery, pytest.mark.e2e]

NIGHT = "2026-11-23"
CONF = {"night": NIGHT, "site": "local", "survey": "demo", "version": "v1"}
#: Products per CCD of one exposure, by kind (the embedded run files the same; 5 exposures x 4 CCDs).
PER_CCD_KINDS = ("image", "weight", "mask")


@pytest.fixture(scope="module")
def night_run(celery_airflow):
    need_binary("source-extractor", "scamp", "psfex")
    af = celery_airflow
    root = Path(af.env["COSMODM_RAW_SOURCE"]).parent
    cosmodm = str(Path(sys.executable).parent / "cosmodm")
    subprocess.run([cosmodm, "sim", "night", "--camera", "decam-mini", "--night", NIGHT, "--exposures", "5",
                    "--bands", "g,r", "--cloudy", "1", "--seed", "2026", "--no-progress",
                    "--out", str(root / "incoming" / NIGHT)], check=True, capture_output=True, timeout=900)
    subprocess.run([cosmodm, "archive", "init"], env=af.env, check=True, capture_output=True, timeout=120)
    af.wait_for_dag("nightly_ingest")
    t0 = time.monotonic()
    run_id = af.trigger("nightly_ingest", CONF)
    state = af.wait_run("nightly_ingest", run_id, timeout=1500)  # a loaded 2-core machine: 15+ min
    wall = time.monotonic() - t0
    rss = {k: round(v / 1024, 1) for k, v in af.peak_rss_kib.items()}
    print(json.dumps({"celery_night_wall_s": round(wall, 1), "peak_rss_mb": rss}), file=sys.stderr)
    (root / "measured.json").write_text(json.dumps({"wall_s": wall, "peak_rss_mb": rss}))
    assert state == "success", "\n".join(af.log_tail(n, 60) for n in ("scheduler", "worker-default",
                                                                        "worker-site_local", "triggerer"))
    return af, run_id, root


def _archive(af):
    from cosmodm_ops.archive import Archive

    return Archive(af.archive_url, af.env["COSMODM_ARCHIVE_ROOT"])


def test_products_and_verdicts_match_the_embedded_run(night_run):
    import fitsio

    af, _, root = night_run
    truth = fitsio.read(str(root / "incoming" / NIGHT / "truth" / "exposures.fits"))
    cloudy = {int(e) for e, c in zip(truth["expnum"], truth["cloudy"], strict=True) if c}
    archive = _archive(af)
    expnums = [int(e) for e in truth["expnum"]]
    quarantined = {e for e in expnums if archive.is_quarantined({"survey": "demo", "night": NIGHT, "expnum": e})}
    assert len(expnums) == 5 and quarantined == cloudy and len(cloudy) == 1
    reasons = archive.quarantine_reasons({"survey": "demo", "night": NIGHT, "expnum": next(iter(cloudy))})
    assert any("zeropoint" in r for r in reasons), reasons
    from cosmodm_ops.workflows.nightly import night_counts

    counts = night_counts(NIGHT, af.archive_url, af.env["COSMODM_ARCHIVE_ROOT"])
    assert (counts["exposures"], counts["accepted"], counts["quarantined"], counts["failed"]) == (5, 4, 1, 0), counts
    products = archive.find(survey="demo", night=NIGHT)
    kinds = Counter(p["kind"] for p in products)
    assert kinds["raw"] == 5, kinds
    for kind in PER_CCD_KINDS:
        assert kinds[kind] == 5 * 4, kinds
    # per exposure the same set of kinds, each CCD's products once (nothing duplicated by redelivery)
    per_exp = {e: Counter(p["kind"] for p in products if p["expnum"] == e) for e in expnums}
    assert len({tuple(sorted(c.items())) for c in per_exp.values()}) == 1, per_exp
    keys = [(p["kind"], p["expnum"], p.get("ccd")) for p in products]
    assert len(keys) == len(set(keys))
    report = archive.verify(quarantine=False)
    assert report.clean, report.to_dict()
    db_counts = archive.counts()
    assert db_counts["objects"] > 500 and db_counts["qa_results"] > 0 and db_counts["runs"] >= 5


def test_raw_checksums_and_lineage_edges(night_run):
    """Raw files are byte-identical to the simulator's; every CCD image descends from its exposure's raw."""
    import hashlib

    af, _, root = night_run
    archive = _archive(af)
    raws = {p["expnum"]: p for p in archive.find(survey="demo", night=NIGHT, kind="raw")}
    for raw in (root / "incoming" / NIGHT / "raw").glob("*.fits.fz"):
        expnum = int(raw.name.split("_")[-1].split(".")[0])
        assert raws[expnum]["sha256"] == hashlib.sha256(raw.read_bytes()).hexdigest()
    for image in archive.find(survey="demo", night=NIGHT, kind="image"):
        up = json.dumps(archive.lineage(image["id"], direction="up", depth=2))
        assert raws[image["expnum"]]["path"] in up, image["path"]


def _task_instances(af, run_id: str, dag_id: str = "nightly_ingest") -> list[tuple]:
    import psycopg2

    conn = psycopg2.connect(af.meta_url.replace("+psycopg2", ""))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT task_id, map_index, queue, hostname, state FROM task_instance "
                        "WHERE dag_id = %s AND run_id = %s", (dag_id, run_id))
            return cur.fetchall()
    finally:
        conn.close()


def test_site_tasks_ran_on_the_site_worker_and_the_rest_on_the_default_one(night_run):
    af, run_id, _ = night_run
    rows = _task_instances(af, run_id)
    site_tasks = {"exposure.single_epoch", "transfer"}
    on_site = [r for r in rows if r[0] in site_tasks]
    elsewhere = [r for r in rows if r[0] not in site_tasks and r[4] in ("success", "skipped") and r[3]]
    assert len([r for r in on_site if r[0] == "exposure.single_epoch"]) == 5, rows
    assert {r[2] for r in on_site} == {"site_local"} and all(r[3].endswith("-site_local") for r in on_site), on_site
    assert {r[2] for r in elsewhere} == {"default"} and all(r[3].endswith("-default") for r in elsewhere), elsewhere
    assert {r[0] for r in elsewhere} >= {"plan_night", "discover", "exposure.register", "summary"}


def test_the_nights_deadline_miss_is_recorded_in_the_archive(night_run):
    """The night's products were due 2026-11-24 12:00 UTC: the Deadline Alert fired and filed the miss."""
    from cosmodm_ops.archive import deadline_misses

    af, run_id, _ = night_run
    archive = _archive(af)
    end = time.time() + 120
    misses = []
    while time.time() < end and not misses:
        misses = deadline_misses(archive, dag_id="nightly_ingest", run_id=run_id)
        time.sleep(2)
    assert len(misses) == 1, (misses, af.log_tail("triggerer", 80))
    miss = misses[0]
    assert (miss["night"], miss["survey"], miss["site"]) == (NIGHT, "demo", "local")
    assert miss["due_at"] == "2026-11-24T12:00:00+00:00" and miss["recorded_at"] > miss["due_at"]
    assert "deadline missed: nightly_ingest run " + run_id in (af.home / "triggerer.log").read_text()


# -- a small reprocessing campaign through the same running tier, after the night

CAMPAIGN = "reprocess_campaign"
#: The HITL steps of the campaign DAG and the answer a script gives (a person's choice in the UI).
ANSWERS = {"approve": "Approve", "adjudicate": "accept", "continue_or_abort": "continue"}


def _pending_steps(api, run_id: str) -> list[dict]:
    from cosmodm_ops.campaign.rest import AirflowAPIError

    try:
        details = api.hitl_details(CAMPAIGN, run_id)
    except AirflowAPIError:
        return []
    return [d for d in details if not d.get("responded_at") and d.get("response_received") is not True]


def _drive_campaign(api, run_id: str, timeout: float = 600) -> tuple[str, list[tuple[str, str]]]:
    """Answer the run's HITL steps until it ends: (run state, [(task_id, body)] of every answer given).

    A step asked again (Airflow 3.3.2's resume race under load, see ``AirflowREST.answer_hitl``) is answered
    again, as a person would."""
    from cosmodm_ops.campaign.rest import AirflowAPIError

    answered: list[tuple[str, str]] = []
    end = time.time() + timeout
    while time.time() < end:
        state = api.dag_run(CAMPAIGN, run_id)["state"]
        if state in ("success", "failed"):
            return state, answered
        for step in _pending_steps(api, run_id):
            task_id = step["task_instance"]["task_id"]
            try:
                api.answer_hitl(CAMPAIGN, run_id, task_id, [ANSWERS[task_id]],
                                {"override": {}} if task_id == "adjudicate" else {})
            except AirflowAPIError as err:  # answered meanwhile, or not yet ready: look again
                print(f"HITL {task_id}: {err}", file=sys.stderr)
                continue
            answered.append((task_id, step.get("body") or ""))
        time.sleep(3)
    return "timeout", answered


@pytest.fixture(scope="module")
def campaign_run(night_run):
    """2 accepted exposures of the night reprocessed as v2 with a changed detection threshold (one chunk)."""
    import fitsio

    from cosmodm_ops.campaign.rest import AirflowREST

    af, _, root = night_run
    truth = fitsio.read(str(root / "incoming" / NIGHT / "truth" / "exposures.fits"))
    chosen = sorted(int(e) for e, c in zip(truth["expnum"], truth["cloudy"], strict=True) if not c)[:2]
    af.wait_for_dag(CAMPAIGN)
    conf = {"name": "celery-detect-thresh-3", "survey": "demo", "stage": "single_epoch", "nights": [NIGHT],
            "expnums": chosen, "target_version": "v2", "overrides": {"single_epoch.detect_thresh": 3.0},
            "site": "local", "chunk_size": 2, "max_retries": 1}
    api = AirflowREST(af.url, af.token)
    t0 = time.monotonic()
    run_id = api.trigger(CAMPAIGN, conf)["dag_run_id"]
    state, answered = _drive_campaign(api, run_id)
    print(json.dumps({"celery_campaign_wall_s": round(time.monotonic() - t0, 1)}), file=sys.stderr)
    assert state == "success", (state, answered, "\n".join(af.log_tail(n, 60) for n in (
        "scheduler", "worker-default", "worker-site_local", "triggerer")))
    return af, run_id, chosen, answered


def _rows(af, sql: str, **params) -> list:
    import sqlalchemy as sa

    with _archive(af).engine.connect() as conn:
        return conn.execute(sa.text(sql), params).all()


def test_campaign_is_done_with_its_items_and_the_approval_answered_over_rest(campaign_run):
    af, run_id, chosen, answered = campaign_run
    (camp,) = _rows(af, "SELECT id, state, note, target_version FROM campaign WHERE source = :s",
                    s=f"airflow:{run_id}")
    assert (camp.state, camp.target_version) == ("done", "v2") and camp.note.startswith("approved by admin"), camp
    approvals = [body for task_id, body in answered if task_id == "approve"]
    assert approvals and "**2** item(s) to run in 1 chunk(s)" in approvals[0], answered
    items = _rows(af, "SELECT item_key, state, chunk, attempts, qa_verdict, decision FROM campaign_item "
                      "WHERE campaign_id = :c ORDER BY item_key", c=camp.id)
    assert [i.item_key for i in items] == [f"single_epoch:demo:{e:08d}" for e in chosen]
    states = Counter(i.state for i in items)
    assert (states["done"], states["failed"], states["skipped"], len(items)) == (2, 0, 0, 2), items
    assert {i.chunk for i in items} == {0} and all(i.attempts >= 1 for i in items)
    # a borderline item was accepted through the adjudication step (when QA called any borderline)
    assert all(i.decision == "accept" for i in items if i.qa_verdict == "borderline"), items


def test_campaign_products_supersede_the_nights_with_lineage_naming_the_campaign(campaign_run):
    import hashlib

    af, run_id, chosen, _ = campaign_run
    archive = _archive(af)
    (camp_id,) = _rows(af, "SELECT id FROM campaign WHERE source = :s", s=f"airflow:{run_id}")[0]
    rows = _rows(af, "SELECT id, kind, expnum, ccd, version, state, superseded_by, run_id, path, sha256 "
                     "FROM products WHERE night = :n AND kind IN ('image', 'weight', 'mask')", n=NIGHT)
    new = {(r.kind, r.expnum, r.ccd): r for r in rows if r.version == "v2"}
    old = {(r.kind, r.expnum, r.ccd): r for r in rows if r.version == "v1"}
    assert len(new) == len(PER_CCD_KINDS) * 2 * 4 and {k[1] for k in new} == set(chosen)
    assert all(r.state == "current" for r in new.values())
    for key, r in old.items():
        if key[1] in chosen:  # replaced by the campaign's product of the same kind, exposure and CCD
            assert (r.state, r.superseded_by) == ("superseded", new[key].id), r
        else:
            assert (r.state, r.superseded_by) == ("current", None), r
    runs = {r.id: r for r in _rows(af, "SELECT id, dag_id, run_id, job_name, site, state, config_hash FROM runs")}
    v1_hashes = {runs[r.run_id].config_hash for r in old.values() if r.expnum in chosen}
    raws = {p["expnum"]: p["path"] for p in archive.find(survey="demo", night=NIGHT, kind="raw")}
    for r in new.values():
        run = runs[r.run_id]
        assert (run.dag_id, run.run_id, run.site, run.state) == (CAMPAIGN, run_id, "local", "done"), run
        assert run.job_name == f"campaign-{camp_id}/single_epoch:demo:{r.expnum:08d}"
        assert run.config_hash not in v1_hashes  # the changed detection threshold is a different config
        if r.kind == "image":  # its lineage edges were filed by the campaign's run and reach the raw
            edges = _rows(af, "SELECT run_id FROM lineage WHERE product_id = :p", p=r.id)
            assert edges and {runs[e.run_id].job_name for e in edges} == {run.job_name}, edges
            up = json.dumps(archive.lineage(r.id, direction="up", depth=2))
            assert raws[r.expnum] in up, up[:2000]
        path = Path(af.env["COSMODM_ARCHIVE_ROOT"]) / r.path
        assert hashlib.sha256(path.read_bytes()).hexdigest() == r.sha256, r.path
    report = archive.verify(quarantine=False)
    assert report.clean, report.to_dict()


def test_campaign_array_tasks_ran_on_the_site_worker_and_the_rest_on_the_default_one(campaign_run):
    af, run_id, _, _ = campaign_run
    rows = _task_instances(af, run_id, CAMPAIGN)
    array_tasks = {f"{r}_array{s}" for r in ("chunk", "retry", "downstream") for s in ("", "_submit")}
    on_site = [r for r in rows if r[0] in array_tasks and r[3]]  # the retry/downstream rounds only if they ran
    elsewhere = [r for r in rows if r[0] not in array_tasks and r[4] in ("success", "skipped") and r[3]]
    chunk = sorted((r[0], r[4]) for r in on_site if r[0].startswith("chunk_"))
    assert chunk == [("chunk_array", "success"), ("chunk_array_submit", "success")], rows
    assert {r[2] for r in on_site} == {"site_local"} and all(r[3].endswith("-site_local") for r in on_site), on_site
    assert {r[2] for r in elsewhere} == {"default"} and all(r[3].endswith("-default") for r in elsewhere), elsewhere
    assert {r[0] for r in elsewhere} >= {"validate", "plan", "approve", "start", "record", "summary"}, elsewhere
