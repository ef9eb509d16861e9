"""bench.faults: the registry, the table and the JSON line (the rows themselves need the services)."""

from __future__ import annotations

import json

import pytest

from bench import faults


def test_rows_register_run_and_report(monkeypatch, capsys):
    monkeypatch.setattr(faults, "FAULTS", {})
    monkeypatch.setattr(faults, "MODULES", [])
    started = []

    @faults.fault("ok_row", tier="fake")
    def ok_row(env):
        env.service("fake", lambda e: started.append(1) or object())
        return faults.FaultResult("ok_row", "mid-run", "resumed", True, 0, 0, 1.5)

    @faults.fault("crashing_row", tier="fake")
    def crashing_row(env):
        env.service("fake", lambda e: started.append(1) or object())
        raise RuntimeError("boom")

    with pytest.raises(ValueError, match="registered twice"):
        faults.fault("ok_row", tier="fake")(ok_row)
    assert faults.main([]) == 1  # the crashed row fails the run
    out = capsys.readouterr().out.strip().splitlines()
    line = json.loads(out[-1])
    rows = {r["name"]: r for r in line["faults"]}
    assert set(rows) == {"ok_row", "crashing_row"} and started == [1]  # the tier started once
    assert (rows["ok_row"]["survived"], rows["ok_row"]["lost"], rows["ok_row"]["duplicated"],
            rows["ok_row"]["recovery_s"]) == (True, 0, 0, 1.5)
    assert rows["crashing_row"]["survived"] is False and "boom" in rows["crashing_row"]["action"]
    assert out[0].startswith("| fault | injected |") and any(r.startswith("| ok_row | mid-run | resumed | 1.5 |")
                                                           for r in out)
    assert faults.main(["ok_row"]) == 0


def test_the_celery_rows_are_registered():
    faults._load()
    assert {"kill_worker_mid_task", "kill_triggerer_while_deferred", "kill_scheduler"} <= set(faults.FAULTS)
    assert {faults.FAULTS[n].tier for n in ("kill_worker_mid_task", "kill_scheduler")} == {"celery"}


def test_every_row_of_the_issue_is_registered_with_its_tier():
    faults._load()
    tiers = {n: f.tier for n, f in faults.FAULTS.items()}
    assert tiers == {
        "kill_worker_mid_task": "celery", "kill_triggerer_while_deferred": "celery", "kill_scheduler": "celery",
        "same_night_twice": "celery", "restart_archive_postgres": "postgres", "archive_fs_full": "postgres",
        "kill9_during_archive_store": "postgres", "restart_sshd": "slurm", "restart_slurmctld": "slurm",
        "scancel_from_outside": "slurm", "job_over_walltime": "slurm", "globus_task_fails": "globus"}


def test_batch_rows_count_lost_and_duplicated_products(tmp_path):
    from bench.faults.batch_faults import count_products

    (tmp_path / "a.done").write_text("101\n")
    (tmp_path / "b.done").write_text("102\n107\n")  # a second job finished the same work
    (tmp_path / "c.done").write_text("")
    assert count_products(tmp_path, ["a", "b", "c", "d"]) == (2, 1)
    assert count_products(tmp_path, ["a"]) == (0, 0)


def test_archive_rows_find_half_written_files(tmp_path):
    from bench.faults.archive_faults import _half_written, _sources

    srcs = _sources(tmp_path / "src", 2, 1000, 5)
    root = tmp_path / "archive" / "x"
    root.mkdir(parents=True)
    (root / "a.fits.fz").write_bytes(srcs[0].read_bytes())
    (root / ".a.fits.fz.123.abcd.part").write_bytes(b"partial")  # a hidden temporary is not a product
    assert _half_written(tmp_path / "archive", srcs) == 0
    (root / "b.fits.fz").write_bytes(srcs[1].read_bytes()[:500])
    assert _half_written(tmp_path / "archive", srcs) == 1
