"""A real Slurm job array over SSH (fixture ``ssh_slurm``): 6 elements, one exits 3, one cancelled by ``scancel ID_I``.

Submitted by ``cosmodm_ops.batch`` over :class:`SSHRunner` as the SSH test user; element states come from
ONE ``sacct -j <arrayid>`` per poll (elements ``<id>_<i>``, pending ones as ``<id>_[3-5%2]``), and the
same array is then watched by :class:`ArrayJobTrigger` on the shared poller over one async connection.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time

import pytest

pytestmark = [pytest.mark.ssh, pytest.mark.slurm]

pytest.importorskip("asyncssh")
pytest.importorskip("airflow.providers.ssh")

from cosmodm_ops.batch import JobSpec, JobState, get_scheduler
from cosmodm_ops.batch.ssh import AsyncSSHRunner, SSHRunner

CONN_ID = "cosmodm_test_slurm_arrays"
# element 2 fails with 3, element 4 runs until it is cancelled, the others write their index and end
SCRIPT = ('echo "$COSMODM_ARRAY_INDEX" > "done.$COSMODM_ARRAY_INDEX"; '
          '[ "$COSMODM_ARRAY_INDEX" = 2 ] && exit 3; [ "$COSMODM_ARRAY_INDEX" = 4 ] && sleep 300; exit 0')


@pytest.fixture
def site(ssh_slurm, monkeypatch):
    from cosmodm_ops.airflow.triggers import SitePoller

    monkeypatch.setenv(f"AIRFLOW_CONN_{CONN_ID.upper()}", ssh_slurm.sshd.airflow_conn_json())
    AsyncSSHRunner.reset_shared()
    SitePoller._instances.clear()
    runner = SSHRunner.from_airflow_connection(CONN_ID)
    yield get_scheduler("slurm"), runner, ssh_slurm
    runner.close()
    AsyncSSHRunner.reset_shared()
    SitePoller._instances.clear()


def _poll_until(scheduler, runner, ids, until, limit_s=150):
    deadline = time.monotonic() + limit_s
    while True:
        st = scheduler.status(runner, ids)
        if until(st):
            return st
        if time.monotonic() > deadline:
            pytest.fail(f"after {limit_s:.0f} s: {[(j, s.state.value) for j, s in st.items()]}")
        time.sleep(0.5)


def test_array_of_six_one_failing_one_cancelled(site):
    scheduler, runner, ss = site
    spec = JobSpec(name=f"cosmodm-array-{secrets.token_hex(4)}", command=["bash", "-c", SCRIPT],
                   workdir=ss.workdir, memory_gb=0.2, walltime_min=10, array_size=6, array_max_parallel=2)
    job_id = scheduler.submit(runner, spec)
    assert job_id.isdigit()
    assert scheduler.submit(runner, spec) == job_id  # a live array of that name is returned, not resubmitted
    ids = scheduler.array_element_ids(job_id, 6)
    assert ids == [f"{job_id}_{i}" for i in range(6)]
    seen: set[tuple[str, JobState]] = set()

    def running_4(st):
        seen.update((j, s.state) for j, s in st.items())
        if os.environ.get("COSMODM_CAPTURE"):
            print(runner.run(scheduler.status_argv(ids)[0]).stdout)
        return st[ids[4]].state is JobState.RUNNING

    _poll_until(scheduler, runner, ids, running_4)
    assert (ids[5], JobState.RUNNING) not in seen or (ids[4], JobState.RUNNING) in seen
    scheduler.cancel(runner, ids[4])  # scancel <id>_4: that element only
    st = _poll_until(scheduler, runner, ids, lambda s: all(x.state.terminal for x in s.values()))
    got = [(st[i].state, st[i].exit_code) for i in ids]
    assert got[:4] == [(JobState.COMPLETED, 0), (JobState.COMPLETED, 0), (JobState.FAILED, 3), (JobState.COMPLETED, 0)]
    assert got[4][0] is JobState.CANCELLED and got[5] == (JobState.COMPLETED, 0)
    # per-element logs and outputs, each element with its own index
    for i in range(6):
        assert runner.run(["cat", f"{ss.workdir}/done.{i}"]).stdout == f"{i}\n"
    err = runner.run(["cat", f"{ss.workdir}/.cosmodm/{spec.name}.2.err"]).stdout
    assert "command exited with code 3" in err
    # Slurm's own accounting, read as root, agrees element by element
    raw = ss.slurm.run("sacct", "-X", "-P", "-n", "-j", job_id, "-o", "JobID,State,ExitCode").stdout.splitlines()
    assert sorted(raw)[:4] == [f"{job_id}_0|COMPLETED|0:0", f"{job_id}_1|COMPLETED|0:0",
                               f"{job_id}_2|FAILED|3:0", f"{job_id}_3|COMPLETED|0:0"]
    assert sorted(raw)[4].startswith(f"{job_id}_4|CANCELLED")

    # the same array through the trigger: one batched sacct per poll over one shared connection
    from cosmodm_ops.airflow import ArrayJobTrigger

    trigger = ArrayJobTrigger(job_id=job_id, array_size=6, scheduler="slurm", ssh_conn_id=CONN_ID, site="test",
                              poll_interval=0.5)

    async def first_event():
        return await asyncio.wait_for(trigger.run().__anext__(), 60)

    event = asyncio.run(first_event()).payload
    assert [(e["index"], e["state"], e["exit_code"]) for e in event["elements"]][:4] == [
        (0, "completed", 0), (1, "completed", 0), (2, "failed", 3), (3, "completed", 0)]
    assert event["elements"][4]["state"] == "cancelled"
    shared = list(AsyncSSHRunner._shared.values())
    assert len(shared) == 1 and shared[0].connects == 1


def test_campaign_fan_out_costs_two_logins_per_site(ssh_slurm, monkeypatch):
    """ArraySubmitOperator: 3 arrays over ONE login; ArrayJobOperator(job_id=...) x 3 watch on the triggerer's
    shared connection: one more login. Every element ran once, as the SSH user, on loopback-slurm."""
    import json
    from pathlib import Path
    from types import SimpleNamespace

    from airflow.sdk.exceptions import TaskDeferred

    from cosmodm_ops.airflow import ArrayJobOperator, ArraySubmitOperator
    from cosmodm_ops.airflow.triggers import SitePoller

    ss = ssh_slurm
    out = Path(ss.workdir) / f"fanout-{secrets.token_hex(3)}"
    monkeypatch.setenv("AIRFLOW_CONN_COSMODM_LOOPBACK", ss.sshd.airflow_conn_json())
    monkeypatch.setenv("COSMODM_WORK_ROOT", ss.workdir)
    monkeypatch.setenv("COSMODM_CONFIG_OVERRIDES", json.dumps({"site": {"ramdisk": {"path": ss.workdir}, "batch": {
        "memory_gb": 0.1, "walltime_min": 5, "poll_interval_s": 0.5}}}))
    AsyncSSHRunner.reset_shared()
    SitePoller._instances.clear()
    stage = 'mkdir -p "$1"; echo "$HOSTNAME" > "$1/item$((OFFSET + COSMODM_ARRAY_INDEX)).$$"'
    ti = SimpleNamespace(task_id="submit", dag_id="fanout", run_id=f"manual__{secrets.token_hex(3)}", try_number=1,
                         map_index=-1, xcom_push=lambda **kw: None)
    logins0 = ss.sshd.logins()
    ids = ArraySubmitOperator(task_id="submit", site="loopback-slurm", arrays=[
        {"command": ["bash", "-c", stage, "stage", str(out)], "array_size": 4, "env": {"OFFSET": str(o)}}
        for o in (0, 4, 8)]).execute({"ti": ti})
    assert len(ids) == 3 and all(i["job_id"].isdigit() and i["array_size"] == 4 for i in ids), ids
    assert ss.sshd.logins() - logins0 == 1
    triggers = []
    for m, kw in enumerate(ids):
        wti = SimpleNamespace(**{**vars(ti), "task_id": "chunk", "map_index": m})
        with pytest.raises(TaskDeferred) as deferred:
            ArrayJobOperator(task_id="chunk", site="loopback-slurm", **kw).execute({"ti": wti})
        triggers.append(deferred.value.trigger)

    async def all_events():
        return await asyncio.wait_for(asyncio.gather(*(t.run().__anext__() for t in triggers)), 120)

    events = [e.payload for e in asyncio.run(all_events())]
    assert [[el["state"] for el in ev["elements"]] for ev in events] == [["completed"] * 4] * 3
    assert ss.sshd.logins() - logins0 == 2  # the submission's and the shared poller's
    files = sorted(p.name.split(".")[0] for p in out.iterdir())
    assert files == sorted(f"item{i}" for i in range(12))  # each item once
    AsyncSSHRunner.reset_shared()
    SitePoller._instances.clear()
