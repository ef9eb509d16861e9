"""Workflow functions that need no services: night and tile planning, the QA verdict reader."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from cosmodm_ops.model import TagError
from cosmodm_ops.workflows.coadd import plan_tile
from cosmodm_ops.workflows.nightly import NightPlan, plan_jobs, qa_verdict, resolve_night


def _site_and_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Work root and an initialized SQLite archive under tmp_path, in the environment as a task sees them."""
    from cosmodm_ops.archive import Archive

    monkeypatch.setenv("COSMODM_WORK_ROOT", str(tmp_path / "work"))
    monkeypatch.setenv("COSMODM_DB", f"sqlite:///{tmp_path / 'a.db'}")
    monkeypatch.setenv("COSMODM_ARCHIVE_ROOT", str(tmp_path / "archive"))
    archive = Archive(f"sqlite:///{tmp_path / 'a.db'}", tmp_path / "archive")
    archive.init()
    return archive


def test_night_from_param_interval_or_run_after():
    assert resolve_night({"night": "2026-11-23"}, None).night == "2026-11-23"
    start = dt.datetime(2026, 11, 20, 14, tzinfo=dt.UTC)
    assert resolve_night({}, start).night == "2026-11-20"
    assert resolve_night({}, None, dt.datetime(2026, 11, 24, 3, tzinfo=dt.UTC)).night == "2026-11-23"
    with pytest.raises(TagError):
        resolve_night({"night": "2026-11-23; rm -rf /"}, None)
    with pytest.raises(TagError):
        resolve_night({"night": "2026-11-23", "site": "../../etc"}, None)


def test_jobs_skip_problem_exposures_and_are_argument_lists(tmp_path: Path, monkeypatch):
    from cosmodm_ops.model import Tags

    archive = _site_and_archive(tmp_path, monkeypatch)
    # exposure 9 was processed before: its QA is archived, so it is not redone (unless force)
    (tmp_path / "qa.json").write_text("{}")
    archive.store(tmp_path / "qa.json", Tags(survey="demo", camera="decam-mini", stage="single_epoch", version="v1",
                                             kind="qa", night="2026-11-23", expnum=9, band="g"))
    plan = NightPlan(night="2026-11-23", survey="demo", site="local", version="v1")
    exps = [{"expnum": 7, "band": "g", "path": "/x/a b.fits.fz", "problem": None},
            {"expnum": 8, "band": "r", "path": "/x/c.fits.fz", "problem": "truncated"},
            {"expnum": 9, "band": "g", "path": "/x/d.fits.fz", "problem": None}]
    jobs = plan_jobs(plan, exps)
    assert [j["expnum"] for j in jobs] == [7]
    forced = NightPlan(night="2026-11-23", survey="demo", site="local", version="v1", force=True)
    assert [j["expnum"] for j in plan_jobs(forced, exps)] == [7, 9]
    cmd = jobs[0]["command"]
    assert cmd[:3] == ["cosmodm", "single-epoch", "run"] and str(tmp_path / "work" / "2026-11-23" / "input" / "raw" / "a b.fits.fz") in cmd
    assert jobs[0]["out"].endswith("2026-11-23/00000007")


def test_qa_verdict_reads_failed_checks(tmp_path: Path):
    (tmp_path / "qa.json").write_text(json.dumps({"exposure": {"zeropoint": 30.9}, "checks": [
        {"name": "seeing", "value": 1.1, "threshold": 2.0, "verdict": "pass"},
        {"name": "zeropoint_deficit", "value": 0.81234, "threshold": 0.3, "verdict": "fail"}]}))
    passed, reasons, summary = qa_verdict(tmp_path)
    assert not passed and reasons == ["zeropoint_deficit=0.8123 (threshold 0.3)"] and summary["zeropoint"] == 30.9
    assert qa_verdict(tmp_path / "missing")[0] is False
    (tmp_path / "qa.json").write_text("{not json")
    assert "not valid JSON" in qa_verdict(tmp_path)[1][0]


def test_tile_plan_from_partition_key(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("COSMODM_WORK_ROOT", str(tmp_path))
    plan = plan_tile({}, "demo-mini-030.200-00.200:r")
    assert plan["tile"] == "demo-mini-030.200-00.200" and plan["bands"] == ["r"]
    job = plan["jobs"][0]
    assert job["command"][:3] == ["cosmodm", "coadd", "run"] and "--db" not in job["command"]
    assert job["out"] == str(tmp_path / "coadd" / "demo-mini-030.200-00.200" / "r")
    every = plan_tile({"tile": "DES0204-0500"}, None)
    assert every["bands"] == ["g", "r", "i", "z"]
    with pytest.raises(ValueError, match="no tile"):
        plan_tile({}, None)
    with pytest.raises(TagError):
        plan_tile({}, "../x:r")


def test_calibration_command_passes_the_truth_catalog_when_it_exists(tmp_path: Path, monkeypatch):
    from cosmodm_ops.model import Tags
    from cosmodm_ops.workflows.coadd import calibration_command

    archive = _site_and_archive(tmp_path, monkeypatch)
    tile = "demo-mini-030.200-00.200"
    for band in ("g", "r"):
        (tmp_path / f"{band}.fits").write_bytes(band.encode())
        archive.store(tmp_path / f"{band}.fits", Tags(survey="demo", camera="decam-mini", stage="coadd", version="v1",
                                                       kind="coadd", tile=tile, band=band))
    plan = plan_tile({"tile": tile, "bands": ["g", "r"]}, None)
    truth = tmp_path / "night" / "truth" / "objects.fits"
    monkeypatch.setenv("COSMODM_TRUTH_CATALOG", str(truth))
    cmd = calibration_command(plan)
    assert cmd[:3] == ["cosmodm", "coadd", "calibrate"] and "--truth" not in cmd  # no such file: not a simulation
    truth.parent.mkdir(parents=True)
    truth.write_bytes(b"x")
    cmd = calibration_command(plan)
    assert cmd[cmd.index("--truth") + 1] == str(truth) and cmd[cmd.index("--bands") + 1] == "g,r"
