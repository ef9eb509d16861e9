"""``cosmodm batch``: submit, status, cancel, script, on the local site with real processes."""

from __future__ import annotations

import json
import time

import pytest

from cosmodm_ops.cli import EXIT_BAD_INPUT, main


@pytest.fixture
def local(tmp_path, monkeypatch):
    monkeypatch.setenv("COSMODM_LOCAL_JOBS", str(tmp_path / "registry"))
    return tmp_path


def _json(capsys) -> dict:
    return json.loads(capsys.readouterr().out)


def _final(capsys, job_id: str, limit: float = 30.0) -> dict:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        assert main(["batch", "status", "--site", "local", "--json", job_id]) == 0
        row = _json(capsys)[job_id]
        if row["terminal"]:
            return row
        time.sleep(0.05)
    raise AssertionError(f"{job_id} not final: {row}")


def test_submit_status_cancel(local, capsys):
    args = ["batch", "submit", "--site", "local", "--workdir", str(local / "w"), "--no-ramdisk", "--json"]
    assert main([*args, "--name", "cli.bad.t1", "--", "bash", "-c", "echo to-err >&2; exit 65"]) == 0
    info = _json(capsys)
    assert info["job_id"] == "cli.bad.t1" and info["system"] == "local"
    row = _final(capsys, "cli.bad.t1")
    assert (row["state"], row["exit_code"]) == ("failed", 65)
    assert (local / "w" / ".cosmodm" / "cli.bad.t1.err").read_text().startswith("to-err\n")

    assert main([*args, "--name", "cli.long.t1", "--env", "X=1 2", "--", "sleep", "300"]) == 0
    capsys.readouterr()
    assert main(["batch", "cancel", "--site", "local", "cli.long.t1"]) == 0
    assert capsys.readouterr().out == "cancelled cli.long.t1\n"
    assert _final(capsys, "cli.long.t1")["state"] == "cancelled"

    assert main(["batch", "status", "--site", "local", "cli.bad.t1", "never.t1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split("\t")[:3] == ["cli.bad.t1", "failed", "exit 65"]
    assert lines[1].split("\t")[:2] == ["never.t1", "unknown"]


def test_script_prints_without_submitting(local, capsys):
    assert main(["batch", "script", "--system", "slurm", "--site", "example-hpc", "--name", "x.t1", "--json",
                 "--", "echo", "a b"]) == 0
    out = _json(capsys)
    assert out["system"] == "slurm" and "#SBATCH --partition=cosmo" in out["script"]
    assert "\necho 'a b'\n" in out["script"] and "#SBATCH --chdir=/scratch/cosmodm/work/jobs" in out["script"]


@pytest.mark.parametrize("argv,needle", [
    (["batch", "submit", "--site", "nope", "--", "true"], "no such config"),
    (["batch", "submit", "--site", "local", "--name", "bad name", "--", "true"], "not allowed"),
    (["batch", "submit", "--site", "local"], "no command"),
    (["batch", "script", "--system", "sge", "--", "true"], "unknown batch system"),
    (["batch", "submit", "--site", "local", "--env", "NOEQUALS", "--", "true"], "KEY=VALUE"),
    (["batch", "cancel", "--site", "local", "../x"], "not a job name"),
])
def test_bad_input_exits_65(local, capsys, argv, needle):
    assert main(argv) == EXIT_BAD_INPUT
    assert needle in capsys.readouterr().err
