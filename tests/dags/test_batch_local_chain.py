"""BatchJobOperator -> local scheduler -> BatchJobTrigger -> execute_complete, with real processes.

The whole chain of the embedded default (``make demo``): the operator submits a real detached
job, defers; the trigger (rebuilt from ``serialize()``, as a restarted triggerer would) polls the
local scheduler through the async runner until the job ends; ``execute_complete`` maps the outcome.
"""

from __future__ import annotations

import asyncio
import importlib
from types import SimpleNamespace

import pytest

pytest.importorskip("airflow")
pytestmark = pytest.mark.airflow

from airflow.sdk.exceptions import AirflowException, AirflowFailException, TaskDeferred

from cosmodm_ops.airflow import BatchJobOperator
from cosmodm_ops.airflow.triggers import SitePoller


@pytest.fixture
def local_site(tmp_path, monkeypatch):
    monkeypatch.setenv("COSMODM_WORK_ROOT", str(tmp_path / "work"))
    monkeypatch.setenv("COSMODM_LOCAL_JOBS", str(tmp_path / "registry"))
    return tmp_path


def _context(task_id: str):
    pushed: dict[str, object] = {}
    ti = SimpleNamespace(task_id=task_id, dag_id="chain", run_id="manual__1", try_number=1, map_index=-1,
                         xcom_push=lambda key, value: pushed.__setitem__(key, value),
                         xcom_pull=lambda **kw: pushed.get(kw.get("key")))
    return {"ti": ti}, pushed


def _run_chain(op: BatchJobOperator, ctx: dict) -> dict:
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(ctx)
    path, kwargs = deferred.value.trigger.serialize()
    module, cls = path.rsplit(".", 1)
    trigger = getattr(importlib.import_module(module), cls)(**{**kwargs, "poll_interval": 0.05})

    async def first_event():
        SitePoller._instances.clear()
        return await asyncio.wait_for(trigger.run().__anext__(), 60)

    return asyncio.run(first_event()).payload


def test_success_returns_accounting(local_site):
    op = BatchJobOperator(task_id="ok", command=["bash", "-c", "echo done"], site="local")
    ctx, pushed = _context("ok")
    event = _run_chain(op, ctx)
    assert event["state"] == "completed" and event["exit_code"] == 0
    acc = op.execute_complete(ctx, event)
    assert acc["state"] == "completed" and acc["partial"] is False and acc["site"] == "local"
    info = pushed["batch_job"]
    assert info["scheduler"] == "local" and info["job_id"] == "chain.manual__1.ok.t1"
    assert (local_site / "work" / "jobs" / ".cosmodm" / "chain.manual__1.ok.t1.out").read_text() == "done\n"


def test_bad_input_fails_without_retry_with_the_job_stderr(local_site):
    op = BatchJobOperator(task_id="bad", command=["bash", "-c", "echo 'corrupt raw file' >&2; exit 65"],
                          site="local")
    ctx, _ = _context("bad")
    event = _run_chain(op, ctx)
    assert (event["state"], event["exit_code"]) == ("failed", 65)
    with pytest.raises(AirflowFailException, match="corrupt raw file"):
        op.execute_complete(ctx, event)


def test_transient_exit_retries(local_site):
    op = BatchJobOperator(task_id="flaky", command=["bash", "-c", "exit 75"], site="local")
    ctx, _ = _context("flaky")
    event = _run_chain(op, ctx)
    with pytest.raises(AirflowException, match="exit code 75 \\(retrying\\)"):
        op.execute_complete(ctx, event)
