"""The demo night through Airflow's distributed engine: CeleryExecutor, Redis, PostgreSQL, separate processes.

The same simulated decam-mini night as ``make demo`` (5 exposures in g and r, seed 2026, one cloudy) is
triggered through the REST API of the Celery tier (``tests/fixtures/celery.py``); the archive must hold what
the embedded run gives (``tests/e2e/test_nightly_demo.py``'s expectations: 4 accepted, the cloudy exposure
quarantined for its zeropoint, 5 raws, 20 CCD images with lineage to their raw, every file's checksum
verified), the batch and transfer tasks must have run on the ``site_local`` worker and the rest on the
``default`` one (``task_instance.queue`` and ``hostname`` in the metadata DB), and the night's deadline
(12:00 UTC the next day, long past) must be recorded as a miss in the archive by the Deadline Alert.
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
    state = af.wait_run("nightly_ingest", run_id, timeout=900)
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


def _task_instances(af, run_id: str) -> list[tuple]:
    import psycopg2

    conn = psycopg2.connect(af.meta_url.replace("+psycopg2", ""))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT task_id, map_index, queue, hostname, state FROM task_instance "
                        "WHERE dag_id = %s AND run_id = %s", ("nightly_ingest", run_id))
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
