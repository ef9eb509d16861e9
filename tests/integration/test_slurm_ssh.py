"""The Slurm scheduler through SSH against a real one-node Slurm with accounting (fixture ``ssh_slurm``).

Every job is submitted by ``cosmodm_ops.batch`` over :class:`SSHRunner` as the SSH test user and
watched with ``sacct`` (Slurm's accounting). The trigger tests run :class:`BatchJobTrigger` under
asyncio against the real job, as the triggerer would. The walltime test is the slowest
(Slurm's smallest walltime is one minute; the fixture sets ``OverTimeLimit=0``, ``KillWait=2``).
"""

from __future__ import annotations

import asyncio
import importlib
import secrets
import subprocess
import time

import pytest

pytestmark = [pytest.mark.ssh, pytest.mark.slurm]

pytest.importorskip("asyncssh")
pytest.importorskip("airflow.providers.ssh")

from cosmodm_ops.batch import JobSpec, JobState, JobStatus, get_scheduler
from cosmodm_ops.batch.ssh import AsyncSSHRunner, SSHRunner

CONN_ID = "cosmodm_test_slurm"


@pytest.fixture
def site(ssh_slurm, monkeypatch):
    """(scheduler, runner, ssh_slurm) for one test; the Airflow connection is in the environment."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", ssh_slurm.sshd.airflow_conn_json())
    AsyncSSHRunner.reset_shared()
    _reset_pollers()
    runner = SSHRunner.from_airflow_connection(CONN_ID)
    yield get_scheduler("slurm"), runner, ssh_slurm
    runner.close()
    AsyncSSHRunner.reset_shared()
    _reset_pollers()


def _reset_pollers() -> None:
    from cosmodm_ops.airflow.triggers import SitePoller

    SitePoller._instances.clear()


def _spec(ssh_slurm, command: list[str], **kw) -> JobSpec:
    name = f"cosmodm-test-{secrets.token_hex(4)}"
    return JobSpec(name=name, command=command, workdir=ssh_slurm.workdir, cores=1, memory_gb=0.5, **kw)


def _wait(scheduler, runner, job_id: str, until, limit_s: float = 150) -> JobStatus:
    """Poll (sacct over SSH) until ``until(status)``; a safety limit, not a timing assertion."""
    deadline = time.monotonic() + limit_s
    while True:
        status = scheduler.status(runner, [job_id])[job_id]
        if until(status):
            return status
        if time.monotonic() > deadline:
            pytest.fail(f"job {job_id} still {status} after {limit_s:.0f} s")
        time.sleep(0.5)


def _final(scheduler, runner, job_id, limit_s: float = 150) -> JobStatus:
    return _wait(scheduler, runner, job_id, lambda s: s.state.terminal, limit_s)


def _running(scheduler, runner, job_id) -> JobStatus:
    return _wait(scheduler, runner, job_id, lambda s: s.state in (JobState.RUNNING,) or s.state.terminal, 60)


# --------------------------------------------------------------------------- scheduler over SSH
def test_job_succeeds_with_accounting(site):
    scheduler, runner, ss = site
    # Holds ~80 MB for 3 s so that the 1 s accounting sampler sees it.
    code = ("import time; b = bytearray(80 * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep(3); "
            "open('product.txt', 'w').write('x'); print('done')")
    spec = _spec(ss, ["python3", "-c", code])
    job_id = scheduler.submit(runner, spec)
    assert job_id.isdigit()
    status = _final(scheduler, runner, job_id)
    assert status.state is JobState.COMPLETED and status.exit_code == 0
    assert status.nodes == ss.slurm.node
    assert 3 <= status.elapsed_s <= 60
    assert status.max_rss_mb is not None and 60 <= status.max_rss_mb <= 1000
    out = runner.run(["cat", f"{ss.workdir}/.cosmodm/{spec.name}.out"])
    assert out.stdout.strip().splitlines()[-1] == "done"
    # the script is private; the job's product has the login's umask (022), not the submit step's 077
    modes = runner.run(["stat", "-c", "%a", f"{ss.workdir}/.cosmodm/{spec.name}.sh", f"{ss.workdir}/product.txt"])
    assert modes.stdout.split() == ["600", "644"]
    # The same job, seen by Slurm's own accounting as root: our numbers are sacct's.
    raw = ss.slurm.run("sacct", "-X", "-P", "-n", "-j", job_id, "-o", "State,ExitCode,NodeList").stdout.split()
    assert raw == [f"COMPLETED|0:0|{ss.slurm.node}"]


def test_exit_65_is_failed_with_its_code(site):
    scheduler, runner, ss = site
    job_id = scheduler.submit(runner, _spec(ss, ["bash", "-c", "echo 'bad input' >&2; exit 65"]))
    status = _final(scheduler, runner, job_id)
    assert (status.state, status.exit_code) == (JobState.FAILED, 65)


def test_scancel_is_cancelled(site):
    scheduler, runner, ss = site
    job_id = scheduler.submit(runner, _spec(ss, ["sleep", "300"]))
    assert _running(scheduler, runner, job_id).state is JobState.RUNNING
    scheduler.cancel(runner, job_id)
    status = _final(scheduler, runner, job_id)
    assert status.state is JobState.CANCELLED


def test_walltime_exceeded_is_timeout(site):
    scheduler, runner, ss = site
    job_id = scheduler.submit(runner, _spec(ss, ["sleep", "200"], walltime_min=1))
    status = _final(scheduler, runner, job_id, limit_s=180)
    assert status.state is JobState.TIMEOUT
    assert 60 <= status.elapsed_s < 200


def test_job_killed_mid_run_is_failed(site):
    scheduler, runner, ss = site
    job_id = scheduler.submit(runner, _spec(ss, ["sleep", "377"]))
    _running(scheduler, runner, job_id)
    # The job's processes, from Slurm itself; kill -9 the sleep (ours: same user, by PID).
    victim = None
    deadline = time.monotonic() + 30
    while victim is None and time.monotonic() < deadline:
        lines = ss.slurm.run("scontrol", "listpids", job_id, check=False).stdout.splitlines()[1:]
        lines += runner.run(["pgrep", "-u", ss.sshd.user, "-x", "sleep"]).stdout.splitlines()
        for pid in (line.split()[0] for line in lines if line.strip()):
            if pid.isdigit():
                cmd = runner.run(["cat", f"/proc/{pid}/cmdline"]).stdout.split("\x00")
                if cmd[:2] == ["sleep", "377"]:
                    victim = pid
        time.sleep(0.3)
    assert victim is not None, "the job's sleep process was not found with scontrol listpids"
    assert runner.run(["kill", "-9", victim]).returncode == 0
    status = _final(scheduler, runner, job_id)
    assert status.state is JobState.FAILED
    assert status.exit_code not in (None, 0)


def test_duplicate_submission_returns_the_same_job(site):
    scheduler, runner, ss = site
    spec = _spec(ss, ["sleep", "120"])
    first = scheduler.submit(runner, spec)
    second = scheduler.submit(SSHRunner.from_airflow_connection(CONN_ID), spec)  # a retry, new connection
    assert first == second
    names = ss.slurm.run("squeue", "-h", "--name", spec.name, "-o", "%i").stdout.split()
    assert names == [first]
    scheduler.cancel(runner, first)
    assert _final(scheduler, runner, first).state is JobState.CANCELLED


# --------------------------------------------------------------------------- the trigger, under asyncio
def _trigger(job_id: str):
    from cosmodm_ops.airflow.triggers import BatchJobTrigger

    return BatchJobTrigger(job_id=job_id, scheduler="slurm", ssh_conn_id=CONN_ID, site="test-slurm",
                           poll_interval=1.0, max_failures=8)


async def _first_event(trigger):
    async for event in trigger.run():
        return event.payload
    return None


def test_trigger_reports_completion(site):
    scheduler, runner, ss = site
    job_id = scheduler.submit(runner, _spec(ss, ["bash", "-c", "sleep 2; exit 0"]))
    event = asyncio.run(asyncio.wait_for(_first_event(_trigger(job_id)), 120))
    assert event["job_id"] == job_id and event["state"] == "completed" and event["exit_code"] == 0
    assert event["nodes"] == ss.slurm.node


def test_trigger_survives_sshd_restart_mid_poll(site):
    scheduler, runner, ss = site
    job_id = scheduler.submit(runner, _spec(ss, ["bash", "-c", "sleep 12; exit 65"]))
    before = ss.sshd.logins()

    async def main():
        trigger = _trigger(job_id)
        poller = trigger._poller()
        task = asyncio.create_task(_first_event(trigger))
        while poller.polls < 2:
            await asyncio.sleep(0.1)
        await asyncio.to_thread(ss.sshd.stop)
        await asyncio.sleep(3)  # polls fail meanwhile
        assert not task.done()
        await asyncio.to_thread(ss.sshd.start)
        event = await asyncio.wait_for(task, 120)
        shared = await _runner_of(poller)
        return event, shared

    try:
        event, shared = asyncio.run(main())
    finally:
        ss.sshd.start()
    assert (event["state"], event["exit_code"]) == ("failed", 65)
    assert shared.connects == 2  # one before the restart, one after
    assert ss.sshd.logins() - before == 2


async def _runner_of(poller):
    return await poller.runner_factory()


def test_trigger_rebuilt_from_serialize_resumes(site):
    scheduler, runner, ss = site
    job_id = scheduler.submit(runner, _spec(ss, ["bash", "-c", "sleep 6; exit 0"]))

    async def first_life():
        trigger = _trigger(job_id)
        poller = trigger._poller()
        task = asyncio.create_task(_first_event(trigger))
        while poller.polls < 1:
            await asyncio.sleep(0.1)
        task.cancel()  # the triggerer stops mid-job
        try:
            await task
        except asyncio.CancelledError:
            pass
        assert job_id not in poller.watchers  # unregistered on the way out
        return trigger.serialize()

    classpath, kwargs = asyncio.run(first_life())
    AsyncSSHRunner.reset_shared()
    _reset_pollers()
    module, _, name = classpath.rpartition(".")
    rebuilt = getattr(importlib.import_module(module), name)(**kwargs)  # what a new triggerer does
    assert rebuilt.serialize() == (classpath, kwargs)
    event = asyncio.run(asyncio.wait_for(_first_event(rebuilt), 120))
    assert (event["job_id"], event["state"], event["exit_code"]) == (job_id, "completed", 0)


# A node failure under a running job, on the real one-node Slurm: the job is requeued, not final.
# The node is set DOWN with ``scontrol`` while the job runs (what slurmctld does when a node stops
# answering). Slurm's default ``JobRequeue=1`` puts the job back in the queue under the same id, held
# until a begin time about two minutes later, but sacct keeps showing the killed run as NODE_FAIL for
# seconds (seen here on Slurm 22.05); the scheduler must report the live job, so that Airflow keeps
# waiting for it instead of failing (and resubmitting) it. The node returns to IDLE at once here
# (``ReturnToService=2``, slurmd still answers); the test then moves the begin time to now.
def _scontrol(cluster, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["scontrol", *args], env=cluster.env, check=False, capture_output=True, text=True,
                          timeout=30)


def test_node_failure_requeues_the_job_and_it_completes(site):
    scheduler, runner, ssh_slurm = site
    cluster = ssh_slurm.slurm
    job = scheduler.submit(runner, _spec(ssh_slurm, ["bash", "-c", "sleep 8; echo done"]))
    assert _running(scheduler, runner, job).state is JobState.RUNNING
    res = _scontrol(cluster, "update", f"nodename={cluster.node}", "state=down", "reason=cosmodm-test")
    assert res.returncode == 0, res.stderr
    seen = []
    for _ in range(8):
        seen.append(scheduler.status(runner, [job])[job])
        time.sleep(0.5)
    assert not any(s.state.terminal for s in seen), seen  # sacct says NODE_FAIL here: squeue knows better
    assert seen[-1].state is JobState.PENDING and "requeued after NODE_FAIL" in (seen[-1].reason or "")
    queue = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T|%r"], env=cluster.env, capture_output=True,
                           text=True, check=True, timeout=30).stdout.strip()
    assert queue == "PENDING|BeginTime"  # requeued, held for its begin time
    res = _scontrol(cluster, "update", f"jobid={job}", "starttime=now")
    assert res.returncode == 0, res.stderr
    final = _final(scheduler, runner, job)
    assert final.state is JobState.COMPLETED and final.exit_code == 0


def _decide(status: JobStatus) -> str:
    """What BatchJobOperator.execute_complete makes of a final status: success, retry or fail."""
    from dataclasses import asdict
    from types import SimpleNamespace

    from airflow.sdk.exceptions import AirflowException, AirflowFailException

    from cosmodm_ops.airflow import BatchJobOperator

    op = BatchJobOperator(task_id="t", command=["true"], site="local")
    ti = SimpleNamespace(task_id="t", dag_id="d", run_id="r", try_number=1, map_index=-1, xcom_pull=lambda **kw: None)
    event = {**asdict(status), "state": status.state.value}
    try:
        op.execute_complete({"ti": ti}, event)
    except AirflowFailException:
        return "fail"
    except AirflowException:
        return "retry"
    return "success"


def test_cancel_by_our_account_fails_but_by_the_site_retries(site):
    """scancel over SSH as the job's own user is respected; root's scancel (the site's) is retried."""
    scheduler, runner, ss = site
    ours = scheduler.submit(runner, _spec(ss, ["sleep", "300"]))
    theirs = scheduler.submit(runner, _spec(ss, ["sleep", "300"]))
    for job_id in (ours, theirs):
        assert _running(scheduler, runner, job_id).state is JobState.RUNNING
    scheduler.cancel(runner, ours)
    ss.slurm.run("scancel", theirs)  # as root, from outside the platform
    mine, site_cancel = _final(scheduler, runner, ours), _final(scheduler, runner, theirs)
    assert mine.state is site_cancel.state is JobState.CANCELLED
    assert site_cancel.raw_state == "CANCELLED by 0" and mine.raw_state != "CANCELLED by 0"
    assert (_decide(mine), _decide(site_cancel)) == ("fail", "retry")
