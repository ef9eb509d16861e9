"""The local scheduler with real detached processes, and the local command runners."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from pathlib import Path

import pytest

from cosmodm_ops.batch import JobSpec, JobState, TransportError, get_scheduler
from cosmodm_ops.batch.runners import AsyncLocalRunner, LocalRunner


@pytest.fixture
def env(tmp_path):
    """A scheduler with a private registry, a runner, and a spec factory; kills leftovers at the end."""
    registry = tmp_path / "registry"
    sched = get_scheduler("local", registry=str(registry), walltime_s=60)
    runner = LocalRunner()
    made: list[str] = []

    def spec(name, command, **kw):
        made.append(name)
        return JobSpec(name=name, command=command, workdir=str(tmp_path / "work"), **kw)

    yield sched, runner, spec, tmp_path
    for name in made:  # never leave a process behind
        try:
            sched.cancel(runner, name)
        except Exception:  # noqa: BLE001, S110 - best effort cleanup
            pass


def wait_final(sched, runner, job_id, limit=30.0):
    """Poll until the job is final (a generous limit: no timing assertion here)."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        st = sched.status(runner, [job_id])[job_id]
        if st.state.terminal:
            return st
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} not final after {limit} s: {st}")


def test_success_logs_and_accounting(env):
    sched, runner, spec, tmp = env
    script = ('echo "out $GREETING"; echo err >&2; '
              'python3 -c "b = bytearray(80 * 2**20); b[::4096] = b\'x\' * len(b[::4096])"')
    job = sched.submit(runner, spec("ok.t1", ["bash", "-c", script],
                                    env={"GREETING": "hello world"}, ramdisk=str(tmp / "ram")))
    assert job == "ok.t1"
    st = wait_final(sched, runner, job)
    assert (st.state, st.exit_code) == (JobState.COMPLETED, 0)
    assert st.nodes == socket.gethostname() and st.elapsed_s is not None and st.elapsed_s >= 0
    if Path("/usr/bin/time").exists():  # peak RSS of the job: the 80 MiB buffer, touched
        assert 80 <= st.max_rss_mb < 400
    logs = tmp / "work" / ".cosmodm"
    assert (logs / "ok.t1.out").read_text() == "out hello world\n"
    assert (logs / "ok.t1.err").read_text() == "err\n"
    assert (logs / "ok.t1.rc").read_text().strip() == "0"
    assert list((tmp / "ram").iterdir()) == []  # RAM disk removed by the trap


@pytest.mark.parametrize("code,state", [(65, JobState.FAILED), (75, JobState.FAILED), (3, JobState.FAILED)])
def test_exit_codes_are_kept(env, code, state):
    sched, runner, spec, _ = env
    job = sched.submit(runner, spec(f"exit{code}.t1", ["bash", "-c", f"exit {code}"]))
    st = wait_final(sched, runner, job)
    assert (st.state, st.exit_code) == (state, code)


def test_cancel_kills_the_process_group(env):
    sched, runner, spec, tmp = env
    pidfile = tmp / "grandchild.pid"
    job = sched.submit(runner, spec("cancel.t1", ["bash", "-c", f'sleep 300 & echo $! > {pidfile}; wait'],
                                    ramdisk=str(tmp / "ram")))
    for _ in range(200):
        if pidfile.exists() and pidfile.read_text().strip():
            break
        time.sleep(0.02)
    grandchild = int(pidfile.read_text())
    assert sched.status(runner, [job])[job].state is JobState.RUNNING
    sched.cancel(runner, job)
    st = sched.status(runner, [job])[job]  # cancel waits for the recorded exit code
    assert st.state is JobState.CANCELLED and st.exit_code == 128 + signal.SIGTERM
    assert not _alive(grandchild)
    assert list((tmp / "ram").iterdir()) == []
    sched.cancel(runner, job)  # cancelling a finished job is a no-op, not an error
    assert sched.status(runner, [job])[job].state is JobState.CANCELLED


def test_walltime_timeout(env):
    _, runner, spec, tmp = env
    sched = get_scheduler("local", registry=str(tmp / "registry"), walltime_s=1)
    job = sched.submit(runner, spec("slow.t1", ["sleep", "300"]))
    st = wait_final(sched, runner, job)
    assert st.state is JobState.TIMEOUT and st.exit_code == 128 + signal.SIGTERM
    assert "walltime of 1 s reached" in (tmp / "work" / ".cosmodm" / "slow.t1.err").read_text()


def test_duplicate_submission_returns_the_live_job(env):
    sched, runner, spec, tmp = env
    marker = tmp / "starts.txt"
    s = spec("dup.t1", ["bash", "-c", f"echo start >> {marker}; sleep 300"])
    first = sched.submit(runner, s)
    pid_before = (tmp / "work" / ".cosmodm" / "dup.t1.pid").read_text()
    second = sched.submit(runner, s)
    assert first == second == "dup.t1"
    assert (tmp / "work" / ".cosmodm" / "dup.t1.pid").read_text() == pid_before
    time.sleep(0.3)
    assert marker.read_text() == "start\n"  # started once
    sched.cancel(runner, first)
    third = sched.submit(runner, s)  # the old one is over: a new run
    assert third == first and (tmp / "work" / ".cosmodm" / "dup.t1.pid").read_text() != pid_before


def test_concurrent_duplicate_submissions_start_one_job(env):
    """Retries racing each other (a lost reply, two workers): the registry lock lets one job start."""
    from concurrent.futures import ThreadPoolExecutor

    _, runner, spec, tmp = env
    marker = tmp / "race.txt"
    s = spec("race.t1", ["bash", "-c", f"echo start >> {marker}; sleep 300"])
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda _: get_scheduler("local", registry=str(tmp / "registry")).submit(runner, s),
                            range(8)))
    assert ids == ["race.t1"] * 8
    for _ in range(100):
        if marker.exists():
            break
        time.sleep(0.02)
    time.sleep(0.3)
    assert marker.read_text() == "start\n"


def test_status_from_a_fresh_scheduler_and_async_runner(env):
    sched, runner, spec, tmp = env
    a = sched.submit(runner, spec("a.t1", ["bash", "-c", "exit 65"]))
    b = sched.submit(runner, spec("b.t1", ["sleep", "300"]))
    wait_final(sched, runner, a)
    fresh = get_scheduler("local", registry=str(tmp / "registry"))  # as the triggerer would
    st = asyncio.run(fresh.status_async(AsyncLocalRunner(), [a, b, "never.submitted"]))
    assert (st[a].state, st[a].exit_code) == (JobState.FAILED, 65)
    assert st[b].state is JobState.RUNNING
    assert st["never.submitted"].state is JobState.UNKNOWN
    assert fresh.status_argv([a, b])[0][-2:] == [a, b]  # one command for every id


def test_registry_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("COSMODM_LOCAL_JOBS", str(tmp_path / "envreg"))
    sched, runner = get_scheduler("local"), LocalRunner()
    job = sched.submit(runner, JobSpec(name="envreg.t1", command=["true"], workdir=str(tmp_path / "w")))
    assert (tmp_path / "envreg" / job).is_symlink()
    assert wait_final(sched, runner, job).state is JobState.COMPLETED


def test_lost_supervisor_is_node_fail(env):
    sched, runner, spec, tmp = env
    job = sched.submit(runner, spec("lost.t1", ["sleep", "300"]))
    sup, pgid = (int(x) for x in (tmp / "work" / ".cosmodm" / "lost.t1.pid").read_text().split()[:2])
    os.kill(sup, signal.SIGKILL)  # as if the machine had rebooted: no exit code will ever come
    os.killpg(pgid, signal.SIGKILL)
    st = wait_final(sched, runner, job)
    assert st.state is JobState.NODE_FAIL and "supervisor is gone" in st.reason


def test_relative_workdir_and_bad_ids(env, monkeypatch):
    sched, runner, _, tmp = env
    monkeypatch.chdir(tmp)
    job = sched.submit(runner, JobSpec(name="rel.t1", command=["pwd"], workdir="relwork"))
    assert wait_final(sched, runner, job).state is JobState.COMPLETED
    assert (tmp / "registry" / "rel.t1").resolve() == (tmp / "relwork" / ".cosmodm").resolve()
    assert (tmp / "relwork" / ".cosmodm" / "rel.t1.out").read_text().strip() == str((tmp / "relwork").resolve())
    for bad in ("../../etc/passwd", "", "a b"):
        with pytest.raises(ValueError, match="not a job name"):
            sched.status(runner, [bad])
        with pytest.raises(ValueError, match="not a job name"):
            sched.cancel(runner, bad)


def test_job_products_keep_the_usual_umask(env):
    sched, runner, spec, tmp = env
    product = tmp / "product.txt"
    old = os.umask(0o022)
    try:
        job = sched.submit(runner, spec("umask.t1", ["bash", "-c", f"echo x > {product}"]))
    finally:
        os.umask(old)
    wait_final(sched, runner, job)
    assert product.stat().st_mode & 0o777 == 0o644


def test_local_runner_contract(tmp_path):
    r = LocalRunner()
    res = r.run(["bash", "-c", "echo out; echo err >&2; exit 7"])
    assert (res.returncode, res.stdout, res.stderr) == (7, "out\n", "err\n")
    assert r.run(["cat"], stdin="piped\n").stdout == "piped\n"
    with pytest.raises(TransportError, match="cannot run"):
        r.run([str(tmp_path / "no-such-program")])
    with pytest.raises(TransportError, match="did not finish"):
        r.run(["sleep", "30"], timeout=0.2)
    with pytest.raises(TypeError):
        r.run("echo not a list")  # type: ignore[arg-type]

    async def main():
        a = AsyncLocalRunner()
        res = await a.run(["bash", "-c", "cat; exit 3"], stdin="x")
        with pytest.raises(TransportError):
            await a.run([str(Path(tmp_path) / "missing")])
        with pytest.raises(TransportError, match="did not finish"):
            await a.run(["sleep", "30"], timeout=0.2)
        return res

    res = asyncio.run(main())
    assert (res.returncode, res.stdout) == (3, "x")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_memory_limit_by_the_job_script_is_reported_as_out_of_memory(env):
    """memory_ulimit: a job allocating past its memory ends with exit 71, read as a memory kill; one under it runs."""
    from cosmodm_ops.batch.budget import EXIT_OUT_OF_MEMORY, memory_verdict

    sched, runner, spec, tmp = env
    # touch 150 MiB page by page (RSS grows), then ask for 600 MiB more: over the 0.5 GB limit
    hungry = ("b = bytearray(150 * 2**20); b[::4096] = b'x' * len(b[::4096]); "
              "c = bytearray(600 * 2**20); print('not reached')")
    job = sched.submit(runner, spec("oom.t1", ["python3", "-c", hungry], memory_gb=0.5, memory_ulimit=True))
    st = wait_final(sched, runner, job)
    assert (st.state, st.exit_code) == (JobState.FAILED, EXIT_OUT_OF_MEMORY), st
    err = (tmp / "work" / ".cosmodm" / "oom.t1.err").read_text()
    assert "MemoryError" in err and "out of memory under the job's limit of 512 MiB" in err
    verdict = memory_verdict(st.state.value, st.exit_code, st.max_rss_mb, 0.5)
    assert verdict and "ulimit -v 512" in verdict
    if Path("/usr/bin/time").exists():  # MaxRSS: the 150 MiB touched, below the limit
        assert 150 <= st.max_rss_mb < 512, st.max_rss_mb
    # the retry with the doubled memory (the operator's next JobSpec) succeeds
    job2 = sched.submit(runner, spec("oom.t2", ["python3", "-c", hungry.replace("; print('not reached')", "")],
                                     memory_gb=1.0, memory_ulimit=True))
    st2 = wait_final(sched, runner, job2)
    assert (st2.state, st2.exit_code) == (JobState.COMPLETED, 0), (tmp / "work" / ".cosmodm" / "oom.t2.err").read_text()
    assert memory_verdict(st2.state.value, st2.exit_code, st2.max_rss_mb, 1.0) is None
