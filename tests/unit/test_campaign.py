"""Campaigns on the embedded default (SQLite): selection, preview, states, idempotency, overrides, bad input,
and whole campaigns run with local processes (a stand-in single-epoch job) through the CLI."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from cosmodm_ops.campaign import (
    CampaignInputError,
    CampaignState,
    CampaignStore,
    IllegalTransition,
    ItemState,
    parse_request,
    validate_overrides,
)
from cosmodm_ops.campaign.schema import campaign_item
from cosmodm_ops.campaign.states import check_campaign_transition, check_item_transition
from cosmodm_ops.cli import main
from cosmodm_ops.workflows import campaign as wf
from tests.unit.campaign_factory import build_survey, survey_env

NIGHT1 = "2026-11-23"


@pytest.fixture
def survey(tmp_path, monkeypatch):
    survey_env(tmp_path, monkeypatch)
    return build_survey(tmp_path)


def req(**kw):
    base = {"survey": "demo", "stage": "single_epoch", "target_version": "v1", "site": "local",
            "overrides": {"single_epoch.detect_thresh": 3.0}}
    return {**base, **kw}


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ------------------------------------------------------------------ states
def test_state_machine_allows_only_listed_moves():
    assert check_item_transition("planned", "submitted") is ItemState.SUBMITTED
    assert check_item_transition("failed", "planned") is ItemState.PLANNED
    for old, new in (("done", "failed"), ("skipped", "planned"), ("cancelled", "done"), ("failed", "done")):
        with pytest.raises(IllegalTransition, match=f"from '{old}' to '{new}'"):
            check_item_transition(old, new)
    assert check_campaign_transition("awaiting_approval", "rejected") is CampaignState.REJECTED
    for old, new in (("rejected", "planned"), ("cancelled", "running"), ("dry_run", "planned")):
        with pytest.raises(IllegalTransition):
            check_campaign_transition(old, new)


# ------------------------------------------------------------------ overrides and bad input
def test_override_errors_name_key_type_and_file():
    assert validate_overrides("demo", "local", {"single_epoch.detect_thresh": 3.0}) == \
        {"single_epoch": {"detect_thresh": 3.0}}
    with pytest.raises(CampaignInputError) as e:
        validate_overrides("demo", "local", {"single_epoch": {"detect_threshold": 3.0}})
    assert "'single_epoch.detect_threshold'" in str(e.value) and "base.yaml" in str(e.value)
    assert "detect_thresh" in str(e.value)  # the known keys are listed
    with pytest.raises(CampaignInputError) as e:
        validate_overrides("demo", "local", {"single_epoch.detect_minarea": "five"})
    assert "expected int" in str(e.value) and "base.yaml" in str(e.value)
    with pytest.raises(CampaignInputError, match=r"sites/local.yaml"):
        validate_overrides("demo", "local", {"site.batch.cores": "many"})
    with pytest.raises(CampaignInputError, match="greater than 0"):
        validate_overrides("demo", "local", {"qa.max_seeing_arcsec": -1.0})


@pytest.mark.parametrize(("params", "message"), [
    ({"survey": "nosuch"}, "unknown survey 'nosuch'"),
    ({"stage": "dance"}, "unknown stage 'dance'"),
    ({"site": "mars"}, "unknown site 'mars'"),
    ({"tiles": "NOT-A-TILE"}, "unknown tile 'NOT-A-TILE'"),
    ({"nights": "yesterday"}, "'yesterday' is not a date"),
    ({"night_from": "2026-11-30", "night_to": "2026-11-01"}, "is after"),
    ({"expnums": "12,x"}, "'x' is not an integer"),
    ({"chunk_size": 0}, "out of range"),
    ({"overrides": "{bad json"}, "not valid JSON"),
    ({"box": "1,2,3"}, "four numbers"),
])
def test_bad_requests_are_refused_with_the_field(params, message):
    with pytest.raises(CampaignInputError, match=message):
        parse_request(req(**params))


def test_bad_input_creates_nothing(survey, capsys):
    archive = survey["archive"]
    cases = [
        (["--survey", "nosuch"], "unknown survey"),
        (["--nights", "2026-13-45"], "not a date"),
        (["--nights", "2020-01-01"], "0 items match"),
        (["--override", "single_epoch.nope=1"], "single_epoch.nope"),
        (["--target-version", "v1", "--overrides", "{}"], "nothing to do"),
    ]
    for extra, message in cases:
        argv = ["campaign", "submit", "--local", "--survey", "demo", "--stage", "single_epoch",
                "--target-version", "v1", "--override", "single_epoch.detect_thresh=3.0", *extra]
        if "--overrides" in extra:  # same version, no override: the current products are up to date
            argv = [a for a in argv if a != "single_epoch.detect_thresh=3.0" and a != "--override"]
        code, _out, err = run_cli(capsys, *argv)
        assert code == 65, (extra, err)
        assert message in err and "Traceback" not in err
    with archive.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM campaign")).scalar() == 0
        assert conn.execute(sa.text("SELECT count(*) FROM campaign_item")).scalar() == 0


def test_every_bad_input_of_the_issue_exits_65_with_its_message_and_changes_nothing(survey, capsys):
    """The rest of the issue's "Bad input" list through the CLI (the first cases are above)."""
    archive = survey["archive"]
    base = ["campaign", "submit", "--local", "--survey", "demo", "--stage", "single_epoch", "--target-version", "v1",
            "--override", "single_epoch.detect_thresh=3.0"]
    cases = [
        (["--stage", "dance"], "unknown stage 'dance'"),
        (["--site", "mars"], "unknown site 'mars'"),
        (["--tiles", "NOT-A-TILE"], "unknown tile 'NOT-A-TILE'"),
        (["--override", "single_epoch.detect_minarea=five"], "expected int"),
        (["--override", "single_epoch.detect_minarea=five"], "base.yaml"),
    ]
    for extra, message in cases:
        code, _out, err = run_cli(capsys, *base, *extra)
        assert code == 65 and message in err and "Traceback" not in err, (extra, err)

    def counts():
        with archive.engine.connect() as conn:
            return tuple(tuple(conn.execute(sa.text(f"SELECT state, count(*) FROM {t} GROUP BY state ORDER BY state")))
                         for t in ("campaign", "campaign_item"))

    assert counts() == ((), ())
    # a second campaign over a running one's items: refused with the overlap named (or queued with --queue)
    first = wf.create_campaign(req(nights=NIGHT1))["id"]
    before = counts()
    code, _out, err = run_cli(capsys, *base, "--expnums", "901002,902001")
    assert code == 65 and f"campaign {first} (still active) already covers 1" in err and "00901002" in err
    assert counts() == before
    # resuming a cancelled campaign, or a finished one
    assert run_cli(capsys, "campaign", "cancel", str(first))[0] == 0
    before = counts()
    code, _out, err = run_cli(capsys, "campaign", "resume", str(first))
    assert code == 65 and f"campaign {first} is cancelled: it cannot be resumed" in err
    code, _out, err = run_cli(capsys, "campaign", "cancel", str(first))
    assert code == 65 and "nothing to cancel" in err
    assert counts() == before
    code, _out, err = run_cli(capsys, "campaign", "resume", "999")
    assert code == 65 and "no campaign 999" in err and "Traceback" not in err


# ------------------------------------------------------------------ selection and preview
def test_selection_filters_and_up_to_date(survey):
    archive = survey["archive"]
    _r, items, preview, _h = wf.plan_campaign(req(nights=NIGHT1))
    assert [it.expnum for it in items] == [901001, 901002, 901003]
    assert not any(it.up_to_date for it in items)
    _r, items, _p, _h = wf.plan_campaign(req(bands="g"))
    assert sorted(it.expnum for it in items) == [901001, 902001]
    _r, items, _p, _h = wf.plan_campaign(req(expnums="902002", night_from="2026-11-24"))
    assert [it.key for it in items] == ["single_epoch:demo:00902002"]
    _r, items, _p, _h = wf.plan_campaign(req(tiles="", box="30.05,30.25,-1,1"))
    assert sorted(it.expnum for it in items) == [901001, 901002, 902001, 902002]
    archive.quarantine({"survey": "demo", "expnum": 901003}, ["clouds"])
    _r, items, _p, _h = wf.plan_campaign(req(qa="quarantined"))
    assert [it.expnum for it in items] == [901003]
    # same version and no override: everything is up to date -> nothing to do
    with pytest.raises(CampaignInputError, match="nothing to do"):
        wf.plan_campaign(req(overrides={}))
    _r, items, preview, _h = wf.plan_campaign(req(overrides={}, dry_run=True))
    assert preview.skipped == 5 and preview.to_run == 0


def test_preview_counts_costs_and_downstream(survey):
    _r, items, preview, _h = wf.plan_campaign(req(nights=NIGHT1, chunk_size=2))
    assert preview.to_run == 3 and preview.chunks == 2
    assert preview.by_night == {NIGHT1: 3} and preview.by_band == {"g": 1, "r": 2}
    # cpu blocks of the earlier runs: 72 + 36 + 72 s
    assert preview.core_hours_estimated == pytest.approx(180 / 3600)
    assert preview.superseded == 6  # image + weight per exposure
    assert preview.stale_downstream == 1 and preview.stale_by_stage == {"coadd/coadd": 1}
    md = preview.to_markdown()
    assert "**3** item(s) to run in 2 chunk(s)" in md and "| 2026-11-23 | 3 |" in md
    assert json.loads(preview.to_json())["superseded"] == 6
    _r, items, preview, _h = wf.plan_campaign(req(nights=NIGHT1, stage="single_epoch+downstream"))
    assert [it.key for it in items][-1] == "coadd:demo:T1:r" and preview.by_stage == {"single_epoch": 3, "coadd": 1}


# ------------------------------------------------------------------ idempotency and overlap
def test_items_are_keyed_once_and_overlap_is_refused_or_queued(survey):
    row = wf.create_campaign(req(nights=NIGHT1), source="run-1")
    again = wf.create_campaign(req(nights=NIGHT1), source="run-1")  # a duplicate trigger / cleared task
    assert again["id"] == row["id"]
    store = CampaignStore(survey["archive"])
    assert len(store.items(row["id"])) == 3
    items = wf.plan_campaign(req(nights=NIGHT1))[1]
    with store.tx() as conn:  # the insert itself ignores a second copy of a key
        store._insert_items(conn, row["id"], parse_request(req(nights=NIGHT1)), items, {})
    with survey["archive"].engine.connect() as conn:
        n = conn.execute(sa.select(sa.func.count()).select_from(campaign_item)).scalar()
    assert n == 3
    with pytest.raises(CampaignInputError, match=rf"campaign {row['id']} \(still active\) already covers 1 .*00901002"):
        wf.create_campaign(req(expnums="901002,902001"))
    queued = wf.create_campaign(req(expnums="901002,902001", queue=True))
    assert queued["state"] == "queued" and queued["queued_behind"] == row["id"]
    with pytest.raises(CampaignInputError, match="queued behind"):
        wf.resume(queued["id"])


# ------------------------------------------------------------------ whole campaigns, local processes
def test_local_campaign_registers_supersedes_and_reports_stale(survey, capsys, monkeypatch):
    archive = survey["archive"]
    monkeypatch.setenv("FAKE_FAIL_EXPNUMS", "901003")   # transient every time: retried, then failed
    code, out, err = run_cli(capsys, "campaign", "submit", "--local", "--survey", "demo", "--stage",
                             "single_epoch", "--target-version", "v1", "--nights", NIGHT1, "--override",
                             "single_epoch.detect_thresh=3.0", "--chunk-size", "2", "--max-retries", "1",
                             "--max-failure-rate", "0.9", "--json")
    assert code == 3, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary == {**summary, "items": 3, "done": 2, "failed": 1, "skipped": 0, "superseded": 4,
                       "stale_downstream": 1, "state": "done"}
    assert summary["core_hours_used"] == pytest.approx(72 / 3600)  # the stand-in's cpu block: 36 s each
    cid = summary["campaign"]
    items = {it["item_key"]: it for it in CampaignStore(archive).items(cid)}
    failed = items["single_epoch:demo:00901003"]
    assert failed["attempts"] == 2 and failed["exit_code"] == 75 and "transient trouble" in failed["diagnostics"]
    # new revisions at v1, the old ones superseded by them; the run names the campaign
    imgs = archive.find(expnum=901001, kind="image", include_superseded=True)
    assert [(r["revision"], r["state"]) for r in imgs] == [(1, "superseded"), (2, "current")]
    run = archive.product(imgs[1]["id"])["run_id"]
    with archive.engine.connect() as conn:
        job = conn.execute(sa.text("SELECT job_name, dag_id FROM runs WHERE id = :i"), {"i": run}).one()
    assert job == (f"campaign-{cid}/single_epoch:demo:00901001", "reprocess_campaign")
    assert {r["kind"] for r in archive.stale()} == {"coadd"}
    # show, list, retry-failed (now it works), then resume of a finished campaign is refused
    code, out, _ = run_cli(capsys, "campaign", "show", str(cid), "--json")
    info = json.loads(out)
    assert code == 0 and info["failures"][0]["key"] == "single_epoch:demo:00901003"
    code, out, _ = run_cli(capsys, "campaign", "list", "--json")
    assert json.loads(out)[0]["items"] == {"done": 2, "failed": 1}
    monkeypatch.setenv("FAKE_FAIL_EXPNUMS", "")
    code, out, err = run_cli(capsys, "campaign", "retry-failed", str(cid), "--local", "--json")
    assert code == 0, err
    assert json.loads(out)["done"] == 3
    code, _out, err = run_cli(capsys, "campaign", "resume", str(cid))
    assert code == 65 and "is done: it cannot be resumed" in err
    # the same request again: every item is up to date now
    code, _out, err = run_cli(capsys, "campaign", "plan", "--survey", "demo", "--stage", "single_epoch",
                              "--target-version", "v1", "--nights", NIGHT1, "--override",
                              "single_epoch.detect_thresh=3.0", "--json")
    assert code == 0 and '"skipped": 3' in _out and '"to_run": 0' in _out


def test_new_version_supersedes_across_versions_and_bad_input_is_not_retried(survey, monkeypatch):
    archive = survey["archive"]
    monkeypatch.setenv("FAKE_BAD_EXPNUMS", "902002")
    row = wf.create_campaign(req(nights="2026-11-24", target_version="v2", overrides={}))
    summary = wf.run_local(row["id"])
    assert (summary["done"], summary["failed"], summary["superseded"]) == (1, 1, 2)
    items = {it["item_key"]: it for it in CampaignStore(archive).items(row["id"])}
    assert items["single_epoch:demo:00902002"]["attempts"] == 1  # 65: no retry
    old = archive.find(expnum=902001, kind="image", include_superseded=True)
    assert [(r["version"], r["state"]) for r in old] == [("v1", "superseded"), ("v2", "current")]
    assert old[0]["superseded_by"] == old[1]["id"]


def test_cancel_resume_and_failure_rate_pause(survey, monkeypatch):
    monkeypatch.setenv("FAKE_BAD_EXPNUMS", "901001,901002")
    row = wf.create_campaign(req(nights=NIGHT1, chunk_size=2, max_failure_rate=0.5))
    summary = wf.run_local(row["id"])
    assert summary["state"] == "paused" and summary["failed"] == 2 and summary["planned"] == 1
    monkeypatch.setenv("FAKE_BAD_EXPNUMS", "")
    wf.resume(row["id"])
    summary = wf.run_local(row["id"])
    assert (summary["state"], summary["done"], summary["failed"]) == ("done", 1, 2)
    # a crash mid-chunk: submitted items go back to planned on resume, done ones stay
    other = wf.create_campaign(req(nights="2026-11-24"))
    store = CampaignStore(survey["archive"])
    store.set_state(other["id"], CampaignState.RUNNING)
    store.update_item(other["id"], "single_epoch:demo:00902001", ItemState.SUBMITTED)
    after = wf.resume(other["id"])
    assert after["planned"] == 2
    wf.cancel(other["id"])
    with pytest.raises(CampaignInputError, match="is cancelled: it cannot be resumed"):
        wf.resume(other["id"])
    assert {it["state"] for it in store.items(other["id"])} == {"cancelled"}


def test_borderline_qa_goes_to_adjudication(survey, monkeypatch):
    from cosmodm_ops.campaign import adjudicate

    monkeypatch.setenv("FAKE_SEEING", "1.95")  # within 5% of the 2.0 threshold
    row = wf.create_campaign(req(expnums="902001"))
    wf.run_local(row["id"])
    info = wf.show(row["id"])
    assert info["borderline"] == ["single_epoch:demo:00902001"]
    store = CampaignStore(survey["archive"])
    decided = adjudicate(store, row["id"], "single_epoch:demo:00902001", "quarantine", "alice")
    assert decided["decided_by"] == "alice" and decided["decision"] == "quarantine"
    archive = survey["archive"]
    assert any("operator alice quarantined" in r for r in archive.quarantine_reasons(
        {"survey": "demo", "night": "2026-11-24", "expnum": 902001, "version": "v1"}))
    qa = archive.qa_results(expnum=902001, check_name="campaign_adjudication")
    assert [q["verdict"] for q in qa] == ["quarantine"]
    assert wf.show(row["id"])["borderline"] == []


def test_rerun_with_an_override_reruns_that_item_with_it(survey, capsys, monkeypatch):
    from pathlib import Path

    from cosmodm_ops.archive.layout import resolve_under

    archive, key = survey["archive"], "single_epoch:demo:00902001"
    monkeypatch.setenv("FAKE_SEEING", "1.95")  # borderline: an operator decides
    cid = wf.create_campaign(req(expnums="902001"))["id"]  # the campaign's override: detect_thresh 3.0
    assert wf.run_local(cid)["state"] == "done" and wf.show(cid)["borderline"] == [key]
    store = CampaignStore(archive)

    def image_text(state):
        rows = archive.find(expnum=902001, kind="image", include_superseded=True)
        return [resolve_under(Path(archive.root), r["path"]).read_text() for r in rows if r["state"] == state]

    assert image_text("current") == ["image 902001 thresh=3.0"]
    # a bad override is refused with the key and the file, and changes nothing
    code, _out, err = run_cli(capsys, "campaign", "decide", str(cid), key, "rerun", "--who", "bob",
                              "--override", "single_epoch.no_such_key=1")
    assert code == 65 and "single_epoch.no_such_key" in err and "Traceback" not in err
    assert store.items(cid)[0]["state"] == "done" and store.items(cid)[0]["decision"] is None
    code, _out, err = run_cli(capsys, "campaign", "decide", str(cid), key, "accept", "--who", "bob",
                              "--override", "single_epoch.detect_thresh=2.0")
    assert code == 65 and "only goes with the decision 'rerun'" in err
    # rerun with the override: that item runs again with it (and only that item's chunk gets it)
    monkeypatch.setenv("FAKE_SEEING", "1.0")
    code, out, err = run_cli(capsys, "campaign", "decide", str(cid), key, "rerun", "--who", "bob",
                             "--override", "single_epoch.detect_thresh=2.0", "--json")
    assert code == 0, err
    assert json.loads(out) == {**json.loads(out), "state": "planned", "decision": "rerun", "decided_by": "bob"}
    assert store.get(cid)["state"] == "running"
    summary = wf.run_local(cid)
    assert (summary["state"], summary["done"], summary["failed"]) == ("done", 1, 0)
    item = store.items(cid)[0]
    assert (item["attempts"], item["qa_verdict"], item["spec"]["override"]) == (
        2, "pass", {"single_epoch": {"detect_thresh": 2.0}})
    assert image_text("current") == ["image 902001 thresh=2.0"]
    assert "image 902001 thresh=3.0" in image_text("superseded")
    manifest = json.loads((Path(item["out"]) / "manifest.json").read_text())
    from cosmodm_ops.config import config_hash, load_config

    cfg = load_config("demo", site="local", overrides={"pipeline_version": "v1",
                                                       "single_epoch": {"detect_thresh": 2.0}})
    assert manifest["config_hash"] == config_hash(cfg)


def test_coadd_campaign_runs_supersedes_and_records_lineage(survey, capsys):
    """A coadd campaign through `campaign submit --local`: the new coadd, its superseding, its lineage rows."""
    archive = survey["archive"]
    old = archive.find(kind="coadd", tile="T1", band="r")
    assert len(old) == 1
    code, out, err = run_cli(capsys, "campaign", "submit", "--local", "--survey", "demo", "--stage", "coadd",
                             "--target-version", "v2", "--bands", "r", "--json")
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary == {**summary, "state": "done", "items": 1, "done": 1, "failed": 0, "superseded": 1}
    rows = archive.find(kind="coadd", tile="T1", band="r", include_superseded=True)
    assert [(r["version"], r["state"]) for r in rows] == [("v1", "superseded"), ("v2", "current")]
    new = rows[1]
    assert rows[0]["superseded_by"] == new["id"] and rows[0]["id"] == old[0]["id"]
    # lineage: the new coadd was made from the archive's current r-band single-epoch images
    r_images = {int(r["id"]) for r in archive.find(kind="image", band="r", stage="single_epoch")}
    assert len(r_images) == 3
    graph = archive.lineage(new["id"], direction="up", depth=1)
    assert {int(e.input_id) for e in graph.edges if e.input_id is not None} == r_images
    # the run that made it names the campaign; the campaign's item points at it
    cid = summary["campaign"]
    (item,) = CampaignStore(archive).items(cid)
    assert item["item_key"] == "coadd:demo:T1:r" and item["product_ids"] == [new["id"]]
    with archive.engine.connect() as conn:
        job = conn.execute(sa.text("SELECT job_name, dag_id FROM runs WHERE id = :i"),
                           {"i": archive.product(new["id"])["run_id"]}).one()
    assert job == (f"campaign-{cid}/coadd:demo:T1:r", "reprocess_campaign")


def test_single_epoch_plus_downstream_runs_the_coadd_after_its_images(survey):
    archive = survey["archive"]
    row = wf.create_campaign(req(nights=NIGHT1, stage="single_epoch+downstream", target_version="v2",
                                 chunk_size=10))
    items = CampaignStore(archive).items(row["id"])
    assert [(it["stage"], it["chunk"]) for it in items] == [("single_epoch", 0)] * 3 + [("coadd", 1)]
    summary = wf.run_local(row["id"])
    assert (summary["state"], summary["done"], summary["failed"]) == ("done", 4, 0)
    coadd = archive.find(kind="coadd", tile="T1", band="r")[0]
    assert coadd["version"] == "v2"
    # its inputs are the current r-band images: the campaign's NEW v2 images of night 1 (not the
    # superseded v1 ones) and night 2's v1 image, which the campaign did not touch
    ins = {int(e.input_id) for e in archive.lineage(coadd["id"], direction="up", depth=1).edges}
    assert ins == {int(r["id"]) for r in archive.find(kind="image", band="r", stage="single_epoch")}
    assert sorted((archive.product(i)["expnum"], archive.product(i)["version"]) for i in ins) == [
        (901002, "v2"), (901003, "v2"), (902002, "v1")]
    assert summary["stale_downstream"] == 0 and archive.stale() == []


def test_calibrate_campaign_runs_on_the_current_coadds(survey, tmp_path, capsys):
    import numpy as np

    from tests.unit.archive_factory import make_manifest, write_ldac

    archive = survey["archive"]
    (coadd,) = archive.find(kind="coadd", tile="T1", band="r")
    tags = {"survey": "demo", "camera": "decam-mini", "stage": "coadd", "version": "v1", "tile": "T1", "band": "r"}
    old_cat = write_ldac(tmp_path / "old_catalog.fits", np.array([30.0]), np.array([-0.2]))
    archive.register_manifest(make_manifest(tmp_path / "calibrate_job", products=[
        ({**tags, "kind": "coadd_catalog"}, old_cat)], inputs=[("coadd", archive.root / coadd["path"])]))
    code, out, err = run_cli(capsys, "campaign", "submit", "--local", "--survey", "demo", "--stage", "calibrate",
                             "--target-version", "v2", "--json")
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary == {**summary, "state": "done", "items": 1, "done": 1, "failed": 0, "superseded": 1}
    rows = archive.find(kind="coadd_catalog", tile="T1", include_superseded=True)
    assert [(r["version"], r["state"]) for r in rows] == [("v1", "superseded"), ("v2", "current")]
    # made from the tile's current coadd, found through its run's manifest folder when the chunk was written
    edges = archive.lineage(rows[1]["id"], direction="up", depth=1).edges
    assert {int(e.input_id) for e in edges} == {int(coadd["id"])}
    (item,) = CampaignStore(archive).items(summary["campaign"])
    assert item["item_key"] == "calibrate:demo:T1" and item["product_ids"] == [rows[1]["id"]]


def test_each_round_runs_the_earliest_open_stage(survey):
    """What one Airflow round may run at once: images first, their coadd in a later round."""
    row = wf.create_campaign(req(nights=NIGHT1, stage="single_epoch+downstream", target_version="v2", chunk_size=2))
    cid, store = row["id"], CampaignStore(survey["archive"])
    store.set_state(cid, CampaignState.RUNNING)
    assert wf.ready_chunks(cid) == [0, 1]  # the single-epoch chunks; the coadd (chunk 2) waits
    store.update_item(cid, "single_epoch:demo:00901001", ItemState.SUBMITTED)
    for key in ("single_epoch:demo:00901002", "single_epoch:demo:00901003"):
        store.update_item(cid, key, ItemState.SUBMITTED)
        store.update_item(cid, key, ItemState.DONE)
    assert wf.ready_chunks(cid) == []  # an image still running: nothing new may start
    store.update_item(cid, "single_epoch:demo:00901001", ItemState.FAILED)
    assert wf.ready_chunks(cid) == [2]


def test_campaign_progress_is_kept_with_every_item_write_and_filled_by_its_migration(survey, monkeypatch):
    """``campaign_progress`` (the campaigns pages' counts) equals the items' own counts and core-hours after
    creation, runs (item updates), a pause, a resume and a cancel (bulk moves); the migration fills the same."""
    from alembic import command
    from alembic.config import Config

    import cosmodm_ops.archive.db as adb
    from tests.unit.campaign_factory import progress_kept_and_live

    archive = survey["archive"]
    monkeypatch.setenv("FAKE_BAD_EXPNUMS", "901001,901002")
    row = wf.create_campaign(req(nights=NIGHT1, chunk_size=2, max_failure_rate=0.5))
    kept, live = progress_kept_and_live(archive)
    assert kept == live and sum(n for n, _ in kept.values()) == 3
    wf.run_local(row["id"])
    kept, live = progress_kept_and_live(archive)
    assert kept == live and kept[(row["id"], "failed")][0] == 2
    monkeypatch.setenv("FAKE_BAD_EXPNUMS", "")
    wf.resume(row["id"])
    wf.run_local(row["id"])
    other = wf.create_campaign(req(nights="2026-11-24"))
    store = CampaignStore(archive)
    store.set_state(other["id"], CampaignState.RUNNING)
    store.update_item(other["id"], "single_epoch:demo:00902001", ItemState.SUBMITTED)
    store.update_item(other["id"], "single_epoch:demo:00902001", ItemState.RUNNING, core_h_used=0.25)
    store.update_item(other["id"], "single_epoch:demo:00902001", core_h_used=0.5)  # no move, new core-hours
    kept, live = progress_kept_and_live(archive)
    assert kept == live and kept[(other["id"], "running")] == (1, 0.5)
    wf.cancel(other["id"])
    kept, live = progress_kept_and_live(archive)
    assert kept == live and kept[(other["id"], "cancelled")][0] == 2
    assert sum(n for (c, _), (n, _) in kept.items() if c == row["id"]) == 3
    cfg = Config()
    cfg.set_main_option("script_location", str(adb.Path(adb.__file__).with_name("migrations")))
    with archive.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0009_tile_words")
        assert "campaign_progress" not in sa.inspect(conn).get_table_names()
        command.upgrade(cfg, "head")
    assert progress_kept_and_live(archive) == (kept, kept)
