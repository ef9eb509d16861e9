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
