"""BatchJobOperator outcome mapping, BatchJobTrigger serialization, and the shared per-site poller."""

from __future__ import annotations

import asyncio
import shlex
from types import SimpleNamespace

import pytest

pytest.importorskip("airflow")
pytestmark = pytest.mark.airflow

from airflow.sdk.exceptions import AirflowException, AirflowFailException

from cosmodm_ops.airflow import BatchJobOperator, BatchJobTrigger
from cosmodm_ops.airflow.triggers import SitePoller
from cosmodm_ops.batch.base import CommandResult, JobState, JobStatus, Scheduler
from cosmodm_ops.batch.script import render_body


def _ctx():
    ti = SimpleNamespace(task_id="single_epoch", dag_id="d", run_id="r", try_number=1, map_index=0,
                         xcom_pull=lambda **kw: None)
    return {"ti": ti}


@pytest.fixture
def op():
    return BatchJobOperator(task_id="single_epoch", command=["true"], site="local")


def _event(state, code=None):
    return {"job_id": "42", "state": state, "exit_code": code, "elapsed_s": 12.0, "max_rss_mb": 300.0,
            "nodes": "node1"}


def test_completed_returns_accounting(op):
    acc = op.execute_complete(_ctx(), _event("completed", 0))
    assert acc == {"job_id": "42", "state": "completed", "exit_code": 0, "elapsed_s": 12.0, "max_rss_mb": 300.0,
                   "nodes": "node1", "site": "local", "partial": False}


def test_partial_is_success_with_flag(op):
    assert op.execute_complete(_ctx(), _event("failed", 3))["partial"] is True


@pytest.mark.parametrize("state,code", [("failed", 65), ("failed", 2), ("cancelled", None)])
def test_bad_input_and_cancel_fail_without_retry(op, state, code):
    with pytest.raises(AirflowFailException, match="not retried"):
        op.execute_complete(_ctx(), _event(state, code))


@pytest.mark.parametrize("raw_state", ["CANCELLED by 1001", "CANCELLED"])
def test_cancel_by_the_submitting_account_is_not_retried(op, raw_state):
    with pytest.raises(AirflowFailException, match="cancelled: not retried"):
        op.execute_complete(_ctx(), {**_event("cancelled"), "raw_state": raw_state, "reason": raw_state.lower()})


def test_cancel_by_the_site_is_retried(op):
    # Slurm 22.05's sacct State of a job root scancelled (captured in make faults' scancel row)
    event = {**_event("cancelled"), "raw_state": "CANCELLED by 0", "reason": "cancelled by 0"}
    with pytest.raises(AirflowException, match="cancelled by the site, uid 0: retrying") as err:
        op.execute_complete(_ctx(), event)
    assert not isinstance(err.value, AirflowFailException)


@pytest.mark.parametrize("state,code", [("failed", 75), ("failed", 1), ("timeout", None), ("node_fail", None),
                                        ("out_of_memory", None), ("preempted", None), ("error", None)])
def test_transient_outcomes_retry(op, state, code):
    with pytest.raises(AirflowException) as err:
        op.execute_complete(_ctx(), _event(state, code))
    assert not isinstance(err.value, AirflowFailException) and "retrying" in str(err.value)


def test_resources_grow_on_retry(op):
    ctx = _ctx()
    first = op.build_spec(ctx)
    ctx["ti"].try_number = 3
    third = op.build_spec(ctx)
    assert third.walltime_min == int(first.walltime_min * 1.5**2) and third.memory_gb > first.memory_gb
    assert first.name != third.name and first.name.endswith(".t1") and third.name.endswith(".t3")


def test_job_inherits_the_workers_config_overrides(monkeypatch):
    """The job's load_config must see the overrides the worker planned with; the operator's env wins."""
    overrides = '{"site": {"ramdisk": {"path": "/scratch/ram", "max_fraction": 0.9}}}'
    monkeypatch.setenv("COSMODM_CONFIG_OVERRIDES", overrides)
    spec = BatchJobOperator(task_id="single_epoch", command=["true"], site="local", env={"A": "1"}).build_spec(_ctx())
    assert spec.env == {"COSMODM_CONFIG_OVERRIDES": overrides, "A": "1"} and spec.ramdisk == "/scratch/ram"
    assert f"export COSMODM_CONFIG_OVERRIDES={shlex.quote(overrides)}" in render_body(spec)
    mine = BatchJobOperator(task_id="single_epoch", command=["true"], site="local",
                            env={"COSMODM_CONFIG_OVERRIDES": "{}"}).build_spec(_ctx())
    assert mine.env == {"COSMODM_CONFIG_OVERRIDES": "{}"}
    monkeypatch.delenv("COSMODM_CONFIG_OVERRIDES")
    assert BatchJobOperator(task_id="single_epoch", command=["true"], site="local").build_spec(_ctx()).env == {}


def test_trigger_serialize_round_trip_has_no_secrets():
    trig = BatchJobTrigger(job_id="123", scheduler="slurm", ssh_conn_id="hpc", site="example-hpc", poll_interval=5)
    path, kwargs = trig.serialize()
    assert path == "cosmodm_ops.airflow.triggers.BatchJobTrigger"
    import importlib

    mod, cls = path.rsplit(".", 1)
    again = getattr(importlib.import_module(mod), cls)(**kwargs)
    assert again.serialize() == (path, kwargs)
    assert not any(k in str(kwargs).lower() for k in ("key_file", "password", "secret", "private"))


class _CountingScheduler(Scheduler):
    """A test double: jobs finish after a number of polls; counts batched status calls."""

    name = "fake"

    def __init__(self, finish_after: dict[str, int]):
        self.finish_after = finish_after
        self.calls: list[list[str]] = []

    def render_script(self, spec):  # pragma: no cover - not used
        return ""

    def submit(self, runner, spec):  # pragma: no cover - not used
        return "0"

    def status_argv(self, job_ids):
        return [["status", *job_ids]]

    def cancel_argv(self, job_id):  # pragma: no cover - not used
        return ["cancel", job_id]

    def parse_status(self, outputs, job_ids):
        n = len(self.calls)
        return {j: JobStatus(j, JobState.COMPLETED if n >= self.finish_after[j] else JobState.RUNNING, exit_code=0)
                for j in job_ids}

    async def status_async(self, runner, job_ids):
        self.calls.append(list(job_ids))
        return self.parse_status([CommandResult(0, "", "")], job_ids)


def test_many_triggers_share_one_batched_poll():
    jobs = {str(i): 1 + i % 3 for i in range(40)}
    sched = _CountingScheduler(jobs)

    async def factory():
        return object()

    async def main():
        SitePoller._instances.clear()
        triggers = [BatchJobTrigger(job_id=j, scheduler="fake", poll_interval=0.01) for j in jobs]
        for t in triggers:
            t._poller = lambda: SitePoller.get(("fake", None), sched, factory, 0.01)  # the seam
        events = await asyncio.gather(*[t.run().__anext__() for t in triggers])
        return events

    events = asyncio.run(main())
    assert {e.payload["job_id"] for e in events} == set(jobs)
    assert all(e.payload["state"] == "completed" for e in events)
    # 40 jobs, finished after 1-3 polls: one batched call per poll, not one per job
    assert 3 <= len(sched.calls) <= 4
    assert len(sched.calls[0]) == 40


def test_poller_reports_transport_errors_after_bounded_retries():
    class Broken(_CountingScheduler):
        async def status_async(self, runner, job_ids):
            self.calls.append(list(job_ids))
            raise ConnectionError("ssh down")

    sched = Broken({"1": 1})

    async def factory():
        return object()

    async def main():
        SitePoller._instances.clear()
        t = BatchJobTrigger(job_id="1", scheduler="fake", poll_interval=0.001, max_failures=3)
        t._poller = lambda: SitePoller.get(("broken", None), sched, factory, 0.001, 3)
        return await t.run().__anext__()

    event = asyncio.run(main())
    assert event.payload["state"] == "error" and "ConnectionError" in event.payload["message"]
    assert len(sched.calls) == 3


_BUDGET = ('{"site": {"queue": "site_q", "batch": {"memory_limit": "ulimit", "stages": {"single_epoch": '
           '{"cores": 3, "memory_gb": 1, "walltime_min": 7, "retry_memory_factor": 2, "max_memory_gb": 2}}}}}')


def test_stage_budget_reaches_the_jobspec_and_the_queue(monkeypatch):
    monkeypatch.setenv("COSMODM_CONFIG_OVERRIDES", _BUDGET)
    op = BatchJobOperator(task_id="single_epoch", command=["true"], site="local", stage="single_epoch")
    assert op.queue == "site_q"
    ctx = _ctx()
    first = op.build_spec(ctx)
    assert (first.cores, first.memory_gb, first.walltime_min, first.memory_ulimit) == (3, 1.0, 7, True)
    ctx["ti"].try_number = 2
    assert op.build_spec(ctx).memory_gb == 2.0
    ctx["ti"].try_number = 3
    assert op.build_spec(ctx).memory_gb == 2.0  # capped at max_memory_gb
    assert BatchJobOperator(task_id="t", command=["true"], site="local", queue="mine").queue == "mine"
    monkeypatch.delenv("COSMODM_CONFIG_OVERRIDES")
    assert BatchJobOperator(task_id="t", command=["true"], site="local").queue == "default"


@pytest.mark.parametrize("event", [_event("failed", 71), _event("out_of_memory"),
                                   {**_event("failed", 137), "max_rss_mb": 1000.0}])
def test_memory_kill_retries_with_more_memory_then_stops_at_the_cap(monkeypatch, event):
    monkeypatch.setenv("COSMODM_CONFIG_OVERRIDES", _BUDGET)
    op = BatchJobOperator(task_id="single_epoch", command=["true"], site="local", stage="single_epoch")
    ctx = _ctx()
    with pytest.raises(AirflowException) as err:
        op.execute_complete(ctx, event)
    assert not isinstance(err.value, AirflowFailException)
    assert "out of memory" in str(err.value) and "retrying with 2.0 GB" in str(err.value)
    ctx["ti"].try_number = 2  # this try ran at the cap (2 GB): another one would die the same way
    with pytest.raises(AirflowFailException, match="maximum of 2.0 GB"):
        op.execute_complete(ctx, {**event, "max_rss_mb": 2 * event["max_rss_mb"]})


def test_sigkill_far_below_the_limit_is_not_a_memory_kill(monkeypatch):
    monkeypatch.setenv("COSMODM_CONFIG_OVERRIDES", _BUDGET)
    op = BatchJobOperator(task_id="single_epoch", command=["true"], site="local", stage="single_epoch")
    with pytest.raises(AirflowException) as err:
        op.execute_complete(_ctx(), {**_event("failed", 137), "max_rss_mb": 50.0})
    assert "out of memory" not in str(err.value) and "retrying" in str(err.value)


def test_failed_globus_task_is_retried_with_its_error_events():
    from cosmodm_ops.airflow import TransferOperator

    op = TransferOperator(task_id="transfer", items=[], site="local")
    event = {"task_id": "t-1", "status": "FAILED", "done": True, "faults": 3, "message": "failed",
             "events": ["PERMISSION_DENIED: no write access to /site/raw"]}
    with pytest.raises(AirflowException, match=r"ended FAILED \(3 fault\(s\)\): PERMISSION_DENIED: no write access "
                                               r"to /site/raw \(retrying\)") as err:
        op.execute_complete({}, event)
    assert not isinstance(err.value, AirflowFailException)
    assert op.execute_complete({}, {"status": "SUCCEEDED", "task_id": "t-2"})["task_id"] == "t-2"
