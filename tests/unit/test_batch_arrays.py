"""Job arrays: scripts against golden files, element ids, state parsing of array outputs, local emulation.

``UPDATE_GOLDEN=1 pytest tests/unit/test_batch_arrays.py`` rewrites the golden files; review the diff.
Outputs under tests/unit/data/batch/*array*: see that folder's README.md.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import time
from pathlib import Path

import pytest

from cosmodm_ops.batch import JobSpec, JobState, get_scheduler
from cosmodm_ops.batch.base import CommandResult
from cosmodm_ops.batch.runners import LocalRunner
from cosmodm_ops.batch.schedulers.htcondor import parse_condor_json
from cosmodm_ops.batch.schedulers.loadleveler import parse_llq_long
from cosmodm_ops.batch.schedulers.pbs import parse_qstat_json
from cosmodm_ops.batch.schedulers.slurm import expand_array_ids, parse_sacct, parse_squeue

GOLDEN = Path(__file__).parent / "golden" / "batch"
DATA = Path(__file__).parent / "data" / "batch"

ARRAY = JobSpec(
    name="reprocess_campaign.manual__1.run_chunk.m2", command=["cosmodm", "campaign", "run-item", "--chunk", "c 2"],
    workdir="/scratch/cosmodm/work/jobs", cores=2, memory_gb=3.0, walltime_min=30, partition="cosmo",
    env={"COSMODM_CAMPAIGN": "7"}, ramdisk="/dev/shm/cosmodm", array_size=5, array_max_parallel=2,
)


def _read(name: str) -> str:
    return (DATA / name).read_text()


def _cases():
    yield "slurm_array.sh", lambda: get_scheduler("slurm").render_script(ARRAY)
    yield "pbs_array.sh", lambda: get_scheduler("pbs").render_script(ARRAY)
    yield "htcondor_array.sub", lambda: get_scheduler("htcondor").render_script(ARRAY)
    yield "htcondor_array.sh", lambda: get_scheduler("htcondor").render_job_script(ARRAY)
    yield "loadleveler_array.cmd", lambda: get_scheduler("loadleveler").render_script(ARRAY)
    yield "local_array.sh", lambda: get_scheduler("local").render_script(ARRAY)


@pytest.mark.parametrize("golden,render", list(_cases()), ids=[c[0] for c in _cases()])
def test_array_script_matches_golden(golden, render):
    text = render()
    path = GOLDEN / golden
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(text)
    assert path.exists(), f"{path} missing: run with UPDATE_GOLDEN=1 once and review it"
    assert text == path.read_text(), f"{golden} differs from the golden file (UPDATE_GOLDEN=1 to accept)"


def test_array_directives_per_system():
    assert "#SBATCH --array=0-4%2" in get_scheduler("slurm").render_script(ARRAY)
    assert f"#SBATCH --output={ARRAY.workdir}/.cosmodm/{ARRAY.name}.%a.out" in get_scheduler("slurm").render_script(ARRAY)
    pbs = get_scheduler("pbs").render_script(ARRAY)
    assert "#PBS -J 0-4%2" in pbs and f"{ARRAY.name}.^array_index^.err" in pbs
    sub = get_scheduler("htcondor").render_script(ARRAY)
    assert sub.rstrip().endswith("queue 5") and "arguments = $(Process)" in sub and "max_materialize = 2" in sub
    ll = get_scheduler("loadleveler").render_script(ARRAY)
    assert ll.count("# @ queue") == 5 and "# @ dependency = (e2 >= 0)" in ll and "(e3 >= 0)" not in ll
    one = dataclasses.replace(ARRAY, array_size=None, array_max_parallel=None)
    assert "--array" not in get_scheduler("slurm").render_script(one)
    assert "COSMODM_ARRAY_INDEX" not in get_scheduler("slurm").render_script(one)


@pytest.mark.parametrize("kwargs,needle", [
    ({"array_size": 0}, "array_size=0"), ({"array_size": 2.5}, "array_size=2.5"),
    ({"array_size": True}, "array_size=True"), ({"array_max_parallel": 2}, "needs array_size"),
    ({"array_size": 3, "array_max_parallel": 0}, "array_max_parallel=0"),
    ({"array_size": 3, "env": {"COSMODM_ARRAY_INDEX": "1"}}, "env[COSMODM_ARRAY_INDEX]"),
])
def test_array_spec_validation(kwargs, needle):
    with pytest.raises(ValueError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        JobSpec(name="a.t1", command=["true"], workdir="/w", **kwargs)


@pytest.mark.parametrize("system,job_id,ids", [
    ("slurm", "200", ["200_0", "200_1", "200_2"]),
    ("pbs", "400[].pbsserver", ["400[0].pbsserver", "400[1].pbsserver", "400[2].pbsserver"]),
    ("htcondor", "500", ["500.0", "500.1", "500.2"]),
    ("loadleveler", "login1.600", ["login1.600.0", "login1.600.1", "login1.600.2"]),
    ("local", "arr.t0", ["arr.t0.0", "arr.t0.1", "arr.t0.2"]),
])
def test_array_element_ids(system, job_id, ids):
    assert get_scheduler(system).array_element_ids(job_id, 3) == ids


def test_one_status_command_for_the_elements_of_many_arrays():
    slurm = get_scheduler("slurm").status_argv(["200_0", "200_1", "210_0", "99"])
    assert len(slurm) == 1 and slurm[0][slurm[0].index("-j") + 1] == "200,210,99"
    pbs = get_scheduler("pbs").status_argv(["400[0].s", "400[1].s", "401[0].s"])
    assert pbs == [["qstat", "-x", "-f", "-F", "json", "-t", "400[].s", "401[].s"]]
    condor = get_scheduler("htcondor").status_argv([f"500.{i}" for i in range(100)] + ["501.0"])
    assert condor[0][-2:] == ["(ClusterId == 500 && ProcId >= 0 && ProcId <= 99) || (ClusterId == 501 && ProcId == 0)",
                              "101"]


def test_slurm_pending_ranges_expand():
    assert expand_array_ids("123_[3-5,8%2]") == ["123_3", "123_4", "123_5", "123_8"]
    assert expand_array_ids("123_4") == ["123_4"] and expand_array_ids("123") == ["123"]


def test_slurm_sacct_array_elements():
    ids = [f"200_{i}" for i in range(7)] + ["210_0"]
    st = parse_sacct(_read("slurm_sacct_array.txt"), ids)
    assert (st["200_0"].state, st["200_0"].exit_code) == (JobState.COMPLETED, 0)
    assert st["200_0"].max_rss_mb == pytest.approx(3100 / 1024)
    assert (st["200_1"].state, st["200_1"].exit_code) == (JobState.FAILED, 3)
    assert st["200_2"].state is JobState.RUNNING and st["200_2"].elapsed_s == 4
    assert [st[f"200_{i}"].state for i in (3, 4, 5)] == [JobState.PENDING] * 3
    assert "JobArrayTaskLimit" in (st["200_4"].reason or "")
    assert st["200_6"].state is JobState.UNKNOWN
    assert st["210_0"].state is JobState.CANCELLED


def test_slurm_squeue_array_elements():
    st = parse_squeue(_read("slurm_squeue_array.txt"), [f"300_{i}" for i in range(6)])
    assert [st[f"300_{i}"].state for i in range(6)] == [
        JobState.COMPLETED, JobState.RUNNING, JobState.FAILED, JobState.PENDING, JobState.PENDING, JobState.PENDING]
    assert st["300_2"].exit_code == 3


def test_pbs_subjobs():
    ids = [f"400[{i}].pbsserver" for i in range(4)] + ["400[7].pbsserver"]
    st = parse_qstat_json(_read("pbs_qstat_array.json"), ids)
    got = [(st[i].state, st[i].exit_code) for i in ids]
    assert got == [(JobState.COMPLETED, 0), (JobState.FAILED, 3), (JobState.RUNNING, None), (JobState.PENDING, None),
                   (JobState.UNKNOWN, None)]
    assert st["400[0].pbsserver"].max_rss_mb == 20.0 and st["400[1].pbsserver"].elapsed_s == 2


def test_htcondor_procs():
    ids = [f"500.{i}" for i in range(4)]
    st = parse_condor_json(_read("htcondor_q_array.json"), _read("htcondor_history_array.json"), ids)
    assert [(st[i].state, st[i].exit_code) for i in ids] == [
        (JobState.COMPLETED, 0), (JobState.FAILED, 3), (JobState.RUNNING, None), (JobState.PENDING, None)]


def test_loadleveler_steps():
    ids = [f"login1.600.{i}" for i in range(4)]
    st = parse_llq_long(_read("loadleveler_llq_l_array.txt"), ids)
    assert [(st[i].state, st[i].exit_code) for i in ids] == [
        (JobState.COMPLETED, 0), (JobState.FAILED, 3), (JobState.RUNNING, None), (JobState.PENDING, None)]


class _Runner:
    """Answers one submit command; records it."""

    def __init__(self, *results: CommandResult):
        self.results = list(results)
        self.calls: list[list[str]] = []

    def run(self, argv, *, stdin=None, timeout=60):
        self.calls.append(list(argv))
        return self.results.pop(0)


@pytest.mark.parametrize("system,answers,job_id", [
    ("slurm", [CommandResult(0, "", ""), CommandResult(0, "200\n", "")], "200"),
    ("slurm", [CommandResult(0, "200_[3-4%2]|PENDING\n200_2|RUNNING\n", "")], "200"),  # live array: no resubmit
    ("pbs", [CommandResult(0, "", ""), CommandResult(0, "400[].pbsserver\n", "")], "400[].pbsserver"),
    ("htcondor", [CommandResult(0, "", ""), CommandResult(0, "", ""), CommandResult(0, "500.0 - 500.4\n", "")], "500"),
    ("loadleveler", [CommandResult(1, "", "llq: There is currently no job status to report."),
                     CommandResult(0, 'llsubmit: The job "login1.600" with 5 job steps has been submitted.\n', "")],
     "login1.600"),
])
def test_array_submit_returns_the_array_id(system, answers, job_id):
    assert get_scheduler(system).submit(_Runner(*answers), ARRAY) == job_id


# ------------------------------------------------------------------ local emulation, for real
@pytest.fixture
def local(tmp_path):
    return get_scheduler("local", registry=str(tmp_path / "reg")), LocalRunner(), tmp_path


def _until_terminal(scheduler, runner, ids, limit_s=60, on_poll=None):
    deadline = time.monotonic() + limit_s
    seen_running = set()
    while True:
        st = scheduler.status(runner, ids)
        seen_running |= {i for i, s in st.items() if s.state is JobState.RUNNING}
        if on_poll:
            on_poll(st)
        if all(s.state.terminal for s in st.values()):
            return st, seen_running
        assert time.monotonic() < deadline, f"still running after {limit_s} s: {st}"
        time.sleep(0.1)


def test_local_array_end_to_end_one_element_failing(local):
    scheduler, runner, tmp = local
    script = ('echo "$COSMODM_ARRAY_INDEX" > "$COSMODM_RAMDISK/i"; cp "$COSMODM_RAMDISK/i" "out.$COSMODM_ARRAY_INDEX"; '
              'echo "element $COSMODM_ARRAY_INDEX in $COSMODM_RAMDISK"; [ "$COSMODM_ARRAY_INDEX" = 3 ] && exit 3; exit 0')
    spec = JobSpec(name="arr.t1", command=["bash", "-c", script], workdir=str(tmp / "work"), array_size=6,
                   array_max_parallel=2, ramdisk=str(tmp / "ram"))
    job_id = scheduler.submit(runner, spec)
    assert job_id == "arr.t1" and scheduler.submit(runner, spec) == job_id  # idempotent while live
    ids = scheduler.array_element_ids(job_id, 6)
    concurrent: list[int] = []
    st, _ = _until_terminal(scheduler, runner, ids, on_poll=lambda s: concurrent.append(
        sum(x.state is JobState.RUNNING for x in s.values())))
    assert [(st[i].state, st[i].exit_code) for i in ids] == [(JobState.COMPLETED, 0)] * 3 + [
        (JobState.FAILED, 3)] + [(JobState.COMPLETED, 0)] * 2
    assert max(concurrent) <= 2
    logs = tmp / "work" / ".cosmodm"
    for i in range(6):
        assert (logs / f"arr.t1.{i}.out").read_text() == f"element {i} in {tmp / 'ram'}/arr.t1.{i}\n"
        assert (tmp / "work" / f"out.{i}").read_text() == f"{i}\n"  # own index, own RAM-disk folder
        assert (logs / f"arr.t1.{i}.rc").read_text().strip() == ("3" if i == 3 else "0")
    assert not any((tmp / "ram").iterdir())  # every element's RAM-disk folder removed
    assert "command exited with code 3" in (logs / "arr.t1.3.err").read_text()
    # finished: a new submission of the same name runs again
    assert scheduler.submit(runner, spec) == job_id
    st, _ = _until_terminal(scheduler, runner, ids)
    assert st[ids[3]].exit_code == 3


def test_local_array_cancel_one_element_then_the_rest(local):
    scheduler, runner, tmp = local
    spec = JobSpec(name="arr.t2", command=["bash", "-c", '[ "$COSMODM_ARRAY_INDEX" = 0 ] && exit 0; sleep 60'],
                   workdir=str(tmp / "work"), array_size=4, array_max_parallel=2)
    job_id = scheduler.submit(runner, spec)
    ids = scheduler.array_element_ids(job_id, 4)
    deadline = time.monotonic() + 30
    while scheduler.status(runner, [ids[1]])[ids[1]].state is not JobState.RUNNING:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    st = scheduler.status(runner, ids)
    assert st[ids[3]].state is JobState.PENDING and st[ids[3]].raw_state == "queued"
    scheduler.cancel(runner, ids[1])  # one element
    assert scheduler.status(runner, [ids[1]])[ids[1]].state is JobState.CANCELLED
    scheduler.cancel(runner, job_id)  # the whole array, including elements not started
    st, _ = _until_terminal(scheduler, runner, ids)
    assert st[ids[0]].state is JobState.COMPLETED
    assert [st[i].state for i in ids[1:]] == [JobState.CANCELLED] * 3


def test_local_array_element_whose_launcher_died_is_node_fail(local):
    scheduler, runner, tmp = local
    spec = JobSpec(name="arr.t3", command=["sleep", "60"], workdir=str(tmp / "work"), array_size=3,
                   array_max_parallel=1)
    job_id = scheduler.submit(runner, spec)
    ids = scheduler.array_element_ids(job_id, 3)
    pid = int((tmp / "work" / ".cosmodm" / "arr.t3.pid").read_text().split()[0])
    subprocess.run(["kill", "-KILL", str(pid)], check=True)
    deadline = time.monotonic() + 10
    while scheduler.status(runner, [ids[2]])[ids[2]].state is not JobState.NODE_FAIL:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    scheduler.cancel(runner, job_id)
