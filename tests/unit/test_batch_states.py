"""State translation of every scheduler from real command outputs.

Slurm outputs were captured from the real Slurm 22.05 on this machine; PBS, LoadLeveler and
HTCondor outputs follow their documentation (no such daemons exist in Debian 12): see
tests/unit/data/batch/README.md for the origin of every file.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cosmodm_ops.batch import JobState, SubmitError, get_scheduler
from cosmodm_ops.batch.base import CommandResult, SchedulerError
from cosmodm_ops.batch.schedulers.htcondor import parse_condor_json
from cosmodm_ops.batch.schedulers.loadleveler import parse_llq_long, parse_llq_raw
from cosmodm_ops.batch.schedulers.pbs import parse_qstat_json
from cosmodm_ops.batch.schedulers.slurm import SLURM_STATES, parse_exit_code, parse_sacct, parse_squeue

DATA = Path(__file__).parent / "data" / "batch"


def _read(name: str) -> str:
    return (DATA / name).read_text()


class FakeRunner:
    """Answers commands from a script of (predicate, result); records every call."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.calls: list[tuple[list[str], str | None]] = []

    def run(self, argv, *, stdin=None, timeout=60):
        self.calls.append((list(argv), stdin))
        for match, result in self.answers:
            if match(argv):
                return result
        raise AssertionError(f"unexpected command {argv}")


class AsyncFake(FakeRunner):
    async def run(self, argv, *, stdin=None, timeout=60):  # type: ignore[override]
        return FakeRunner.run(self, argv, stdin=stdin, timeout=timeout)


def ok(stdout: str = "", stderr: str = "", rc: int = 0) -> CommandResult:
    return CommandResult(rc, stdout, stderr)


# ---------------------------------------------------------------- Slurm (real outputs)
SACCT_IDS = ["2", "3", "5", "10", "11", "12", "14", "15", "99999"]


def test_sacct_real_outputs():
    st = parse_sacct(_read("slurm_sacct.txt"), SACCT_IDS)
    assert (st["2"].state, st["2"].exit_code) == (JobState.FAILED, 3)
    assert (st["11"].state, st["11"].exit_code) == (JobState.FAILED, 65)  # bad input: 65, not 75
    assert (st["3"].state, st["3"].elapsed_s) == (JobState.TIMEOUT, 65.0)
    assert st["5"].state is JobState.PENDING and st["5"].reason == "JobHeldUser" and st["5"].nodes is None
    assert st["10"].state is JobState.COMPLETED and st["10"].exit_code == 0
    assert st["10"].max_rss_mb == pytest.approx(170052 / 1024)  # from the .batch step (no -X)
    assert st["10"].nodes == "vm" and st["10"].elapsed_s == 3.0
    assert st["12"].state is JobState.CANCELLED and "by 0" in st["12"].reason and st["12"].raw_state == "CANCELLED by 0"
    # a memory kill without cgroups: Slurm itself says FAILED 0:9 (signal 9 -> 137)
    assert (st["14"].state, st["14"].exit_code) == (JobState.FAILED, 137)
    assert st["14"].max_rss_mb == pytest.approx(424556 / 1024)
    assert st["15"].state is JobState.RUNNING and st["15"].exit_code is None and st["15"].elapsed_s == 14.0
    assert st["99999"].state is JobState.UNKNOWN and not st["99999"].state.terminal


def test_squeue_fallback_real_outputs():
    st = parse_squeue(_read("slurm_squeue_noacct.txt"), ["14", "15", "16", "17", "18", "5", "3"])
    assert (st["16"].state, st["16"].exit_code) == (JobState.FAILED, 3)  # wait status 768
    assert (st["17"].state, st["17"].exit_code) == (JobState.COMPLETED, 0)
    assert st["18"].state is JobState.CANCELLED
    assert (st["14"].state, st["14"].exit_code) == (JobState.FAILED, 137)
    assert st["15"].state is JobState.RUNNING and st["15"].elapsed_s == 24.0
    assert st["5"].state is JobState.PENDING and st["5"].reason == "JobHeldUser"
    assert st["3"].state is JobState.UNKNOWN  # aged out of squeue


@pytest.mark.parametrize("text,expected", [("3:0", (3, 0)), ("0:9", (0, 9)), ("65:0", (65, 0)), ("", (None, 0))])
def test_slurm_exit_codes(text, expected):
    assert parse_exit_code(text) == expected


@pytest.mark.parametrize("raw,state", [
    ("PENDING", JobState.PENDING), ("CONFIGURING", JobState.PENDING), ("REQUEUED", JobState.PENDING),
    ("SUSPENDED", JobState.PENDING), ("RUNNING", JobState.RUNNING), ("COMPLETING", JobState.RUNNING),
    ("COMPLETED", JobState.COMPLETED), ("FAILED", JobState.FAILED), ("CANCELLED by 1001", JobState.CANCELLED),
    ("TIMEOUT", JobState.TIMEOUT), ("DEADLINE", JobState.TIMEOUT), ("NODE_FAIL", JobState.NODE_FAIL),
    ("BOOT_FAIL", JobState.NODE_FAIL), ("OUT_OF_MEMORY", JobState.OUT_OF_MEMORY),
    ("PREEMPTED", JobState.PREEMPTED), ("WHATEVER_NEW", JobState.UNKNOWN),
])
def test_slurm_state_table(raw, state):
    # sacct line shapes as in the captured file; OUT_OF_MEMORY as documented (sacct: "0:125")
    line = f"7|{raw}|0:125|5||n1|None\n"
    assert parse_sacct(line, ["7"])["7"].state is state


def test_slurm_table_covers_documented_states():
    documented = {"BOOT_FAIL", "CANCELLED", "COMPLETED", "CONFIGURING", "COMPLETING", "DEADLINE", "FAILED",
                  "NODE_FAIL", "OUT_OF_MEMORY", "PENDING", "PREEMPTED", "RUNNING", "RESV_DEL_HOLD",
                  "REQUEUE_FED", "REQUEUE_HOLD", "REQUEUED", "RESIZING", "REVOKED", "SIGNALING",
                  "SPECIAL_EXIT", "STAGE_OUT", "STOPPED", "SUSPENDED", "TIMEOUT"}
    assert documented <= set(SLURM_STATES)


def test_slurm_submit_is_idempotent_and_parses_parsable():
    live = _read("slurm_squeue_name.txt")  # "15|RUNNING"
    runner = FakeRunner([(lambda a: a[0] == "squeue", ok(live))])
    spec_name = "run"
    from cosmodm_ops.batch import JobSpec

    spec = JobSpec(name=spec_name, command=["true"], workdir="/w")
    assert get_scheduler("slurm").submit(runner, spec) == "15"
    assert [c[0][0] for c in runner.calls] == ["squeue"]  # no sbatch

    runner = FakeRunner([(lambda a: a[0] == "squeue", ok("")),
                         (lambda a: a[0] == "bash", ok(_read("slurm_sbatch_parsable.txt")))])
    assert get_scheduler("slurm").submit(runner, spec) == "19"
    argv, stdin = runner.calls[1]
    assert argv[-2:] == ["sbatch", "--parsable"] and "/w/.cosmodm/run.sh" in argv
    assert stdin.startswith("#!/bin/bash\n#SBATCH --job-name=run\n")


def test_slurm_finished_job_of_same_name_is_not_live():
    from cosmodm_ops.batch import JobSpec

    runner = FakeRunner([(lambda a: a[0] == "squeue", ok("12|COMPLETED\n")),
                         (lambda a: a[0] == "bash", ok("20;cluster\n"))])
    assert get_scheduler("slurm").submit(runner, JobSpec(name="x", command=["true"], workdir="/w")) == "20"


def test_slurm_submit_error_carries_outputs():
    from cosmodm_ops.batch import JobSpec

    runner = FakeRunner([(lambda a: a[0] == "squeue", ok("")),
                         (lambda a: a[0] == "bash", ok("", "sbatch: error: Invalid partition name specified", 1))])
    with pytest.raises(SubmitError) as err:
        get_scheduler("slurm").submit(runner, JobSpec(name="x", command=["true"], workdir="/w"))
    assert err.value.retcode == 1 and "Invalid partition" in err.value.stderr


def test_slurm_falls_back_to_squeue_once_when_accounting_is_off():
    disabled = ok("", _read("slurm_sacct_disabled.stderr"), 1)
    runner = FakeRunner([(lambda a: a[0] == "sacct", disabled),
                         (lambda a: a[0] == "squeue", ok(_read("slurm_squeue_noacct.txt")))])
    sched = get_scheduler("slurm")
    assert sched.status(runner, ["16", "17"])["16"].exit_code == 3
    assert [c[0][0] for c in runner.calls] == ["sacct", "squeue"]
    sched.status(runner, ["17"])
    assert [c[0][0] for c in runner.calls] == ["sacct", "squeue", "squeue"]  # sacct not retried


def test_slurm_status_is_one_batched_command_async():
    runner = AsyncFake([(lambda a: a[0] == "sacct", ok(_read("slurm_sacct.txt")))])
    st = asyncio.run(get_scheduler("slurm").status_async(runner, SACCT_IDS))
    assert len(runner.calls) == 1 and runner.calls[0][0][4] == ",".join(SACCT_IDS)
    assert st["11"].exit_code == 65


def test_slurm_node_fail_of_a_requeued_job_is_its_live_state():
    # what sacct and squeue printed on the real Slurm right after the node under job 7 went DOWN
    sacct = "7|NODE_FAIL|0:0|3||vm|None\n8|NODE_FAIL|0:0|5||vm|None\n9|COMPLETED|0:0|4||vm|None\n"
    runner = FakeRunner([(lambda a: a[0] == "sacct", ok(sacct)),
                         (lambda a: a[0] == "squeue", ok("7|PENDING|BeginTime\n"))])
    st = get_scheduler("slurm").status(runner, ["7", "8", "9"])
    assert runner.calls[1][0] == ["squeue", "-h", "-j", "7,8", "-o", "%i|%T|%r"]  # only the NODE_FAIL ones
    assert st["7"].state is JobState.PENDING and st["7"].reason == "requeued after NODE_FAIL (BeginTime)"
    assert st["8"].state is JobState.NODE_FAIL and st["8"].state.terminal  # not requeued: final, retryable
    assert st["9"].state is JobState.COMPLETED
    gone = AsyncFake([(lambda a: a[0] == "sacct", ok(sacct)),
                      (lambda a: a[0] == "squeue", ok("", "slurm_load_jobs error: Invalid job id specified", 1))])
    assert asyncio.run(get_scheduler("slurm").status_async(gone, ["7"]))["7"].state is JobState.NODE_FAIL


def test_slurm_status_error_is_scheduler_error():
    runner = FakeRunner([(lambda a: a[0] == "sacct", ok("", "sacct: error: slurmdbd: Connection refused", 1))])
    with pytest.raises(SchedulerError, match="Connection refused"):
        get_scheduler("slurm").status(runner, ["1"])


def test_slurm_cancel_argv_and_error():
    sched = get_scheduler("slurm")
    assert sched.cancel_argv("12") == ["scancel", "12"]
    with pytest.raises(SchedulerError, match="Invalid job id"):
        sched.cancel(FakeRunner([(lambda a: True, ok("", "scancel: error: Invalid job id specified", 1))]), "9")


# ---------------------------------------------------------------- PBS (documented format)
def test_pbs_qstat_json():
    ids = [f"{n}.pbsserver" for n in range(101, 110)] + ["110.pbsserver"]
    st = parse_qstat_json(_read("pbs_qstat.json"), ids)
    s = {k.split(".")[0]: v for k, v in st.items()}
    assert (s["101"].state, s["101"].exit_code, s["101"].elapsed_s) == (JobState.COMPLETED, 0, 602.0)
    assert s["101"].max_rss_mb == pytest.approx(1800.0) and s["101"].nodes == "node01"
    assert (s["102"].state, s["102"].exit_code) == (JobState.FAILED, 65)
    assert s["103"].state is JobState.TIMEOUT and s["103"].nodes == "node01,node03"
    assert s["104"].state is JobState.OUT_OF_MEMORY
    assert s["105"].state is JobState.RUNNING and s["105"].exit_code is None
    assert s["106"].state is JobState.PENDING and "Insufficient" in s["106"].reason
    assert s["107"].state is JobState.PENDING
    assert s["108"].state is JobState.CANCELLED
    assert s["109"].state is JobState.NODE_FAIL
    assert s["110"].state is JobState.UNKNOWN


def test_pbs_unknown_id_exit_code_is_not_an_error():
    res = ok("", "qstat: Unknown Job Id 999.pbsserver", 153)
    st = get_scheduler("pbs").parse_status([res], ["999.pbsserver"])
    assert st["999.pbsserver"].state is JobState.UNKNOWN


def test_pbs_submit_idempotent():
    from cosmodm_ops.batch import JobSpec

    spec = JobSpec(name="cosmo.running", command=["true"], workdir="/w")
    runner = FakeRunner([(lambda a: a[0] == "qselect", ok("105.pbsserver\n")),
                         (lambda a: a[0] == "qstat", ok(_read("pbs_qstat.json")))])
    assert get_scheduler("pbs").submit(runner, spec) == "105.pbsserver"
    runner = FakeRunner([(lambda a: a[0] == "qselect", ok("")),
                         (lambda a: a[0] == "bash", ok("111.pbsserver\n"))])
    assert get_scheduler("pbs").submit(runner, spec) == "111.pbsserver"
    assert runner.calls[1][0][-1] == "qsub"


# ---------------------------------------------------------------- LoadLeveler (documented format)
def test_llq_long():
    base = "login1.example.org."
    ids = [f"{base}{n}.0" for n in range(1234, 1242)]
    st = {k.split(".")[-2]: v for k, v in parse_llq_long(_read("loadleveler_llq_l.txt"), ids).items()}
    assert st["1234"].state is JobState.RUNNING and st["1234"].nodes == "node017.example.org"
    assert st["1235"].state is JobState.PENDING
    assert (st["1236"].state, st["1236"].exit_code) == (JobState.COMPLETED, 0)
    assert (st["1237"].state, st["1237"].exit_code) == (JobState.FAILED, 65)  # 16640 = 65 << 8
    assert st["1238"].state is JobState.CANCELLED
    assert st["1239"].state is JobState.PENDING and st["1239"].reason == "User Hold"
    assert (st["1240"].state, st["1240"].exit_code) == (JobState.FAILED, 137)
    assert st["1241"].state is JobState.UNKNOWN


def test_llq_raw_and_submit():
    from cosmodm_ops.batch import JobSpec

    rows = parse_llq_raw(_read("loadleveler_llq_r.txt"))
    assert rows[0] == ("login1.example.org.1234.0", "cosmo.running", "R")
    sched = get_scheduler("loadleveler")
    runner = FakeRunner([(lambda a: a[0] == "llq", ok(_read("loadleveler_llq_r.txt")))])
    spec = JobSpec(name="cosmo.running", command=["true"], workdir="/w")
    assert sched.submit(runner, spec) == "login1.example.org.1234.0"
    removed = JobSpec(name="cosmo.removed", command=["true"], workdir="/w")
    runner = FakeRunner([(lambda a: a[0] == "llq", ok(_read("loadleveler_llq_r.txt"))),
                         (lambda a: a[0] == "bash",
                          ok('llsubmit: The job "login1.example.org.1300" has been submitted.\n'))])
    assert sched.submit(runner, removed) == "login1.example.org.1300.0"
    empty = ok("", "llq: There is currently no job status to report.", 1)
    assert sched.parse_status([empty], ["a.1.0"])["a.1.0"].state is JobState.UNKNOWN


# ---------------------------------------------------------------- HTCondor (documented format)
def test_condor_json():
    ids = [f"{n}.0" for n in range(201, 211)]
    st = {k.split(".")[0]: v for k, v in
          parse_condor_json(_read("htcondor_q.json"), _read("htcondor_history.json"), ids).items()}
    assert st["201"].state is JobState.RUNNING and st["201"].nodes == "node5.example.org"
    assert st["202"].state is JobState.PENDING
    assert st["203"].state is JobState.OUT_OF_MEMORY and "memory limit" in st["203"].reason
    assert st["204"].state is JobState.PENDING and "condor_hold" in st["204"].reason
    assert (st["205"].state, st["205"].exit_code, st["205"].max_rss_mb) == (JobState.COMPLETED, 0, 1800.0)
    assert (st["206"].state, st["206"].exit_code) == (JobState.FAILED, 65)
    assert (st["207"].state, st["207"].exit_code) == (JobState.FAILED, 137)
    assert st["208"].state is JobState.CANCELLED
    assert st["209"].state is JobState.TIMEOUT and st["209"].elapsed_s == 5701.0
    assert st["210"].state is JobState.UNKNOWN


def test_condor_status_is_one_command_with_a_marker():
    sched = get_scheduler("htcondor")
    argv = sched.status_argv(["205.0", "206"])
    assert len(argv) == 1 and argv[0][:2] == ["bash", "-c"]
    assert argv[0][-2:] == ["(ClusterId == 205 && ProcId == 0) || (ClusterId == 206 && ProcId == 0)", "2"]
    out = _read("htcondor_q.json") + "\n@@cosmodm-condor-history@@\n" + _read("htcondor_history.json")
    st = sched.parse_status([ok(out)], ["203.0", "206.0"])
    assert st["203.0"].state is JobState.OUT_OF_MEMORY and st["206.0"].exit_code == 65
    with pytest.raises(ValueError, match="cluster.proc"):
        sched.status_argv(["12; rm -rf /"])


def test_condor_submit():
    from cosmodm_ops.batch import JobSpec

    spec = JobSpec(name="cosmo.new", command=["true"], workdir="/w")
    runner = FakeRunner([(lambda a: a[0] == "condor_q", ok("")),
                         (lambda a: a[0] == "bash" and a[-2] == "chmod", ok()),
                         (lambda a: a[0] == "bash" and a[-2:] == ["condor_submit", "-terse"], ok("212.0 - 212.0\n"))])
    assert get_scheduler("htcondor").submit(runner, spec) == "212.0"
    assert runner.calls[1][1].startswith("#!/bin/bash\n") and "universe = vanilla" in runner.calls[2][1]
    live = FakeRunner([(lambda a: a[0] == "condor_q", ok(_read("htcondor_q.json")))])
    held = JobSpec(name="cosmo.held", command=["true"], workdir="/w")
    # the lookup's constraint selects by name; the fake returns every ad, the first live one wins
    assert get_scheduler("htcondor").submit(live, held) == "201.0"
