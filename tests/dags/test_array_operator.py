"""ArrayJobOperator -> local job array -> ArrayJobTrigger on the shared SitePoller -> per-element outcomes.

Real processes (the local scheduler's array emulation); the trigger is rebuilt from ``serialize()`` as a
restarted triggerer would; the last test runs the example DAG through ``airflow dags test``.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import re
import sqlite3
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest.importorskip("airflow")
pytestmark = pytest.mark.airflow

from airflow.sdk.exceptions import AirflowException, TaskDeferred

from cosmodm_ops.airflow import ArrayJobOperator, ArrayJobTrigger, BatchJobTrigger
from cosmodm_ops.airflow.triggers import SitePoller
from cosmodm_ops.batch.runners import AsyncLocalRunner
from tests.fixtures.airflow import VENV_BIN, airflow_env
from tests.support import REPO

EXAMPLES = REPO / "tests" / "dags" / "example_dags"
FAIL_3 = 'echo "item $COSMODM_ARRAY_INDEX"; [ "$COSMODM_ARRAY_INDEX" = 3 ] && exit 3; exit 0'


@pytest.fixture
def local_site(tmp_path, monkeypatch):
    monkeypatch.setenv("COSMODM_WORK_ROOT", str(tmp_path / "work"))
    monkeypatch.setenv("COSMODM_LOCAL_JOBS", str(tmp_path / "registry"))
    SitePoller._instances.clear()
    return tmp_path


def _context(task_id: str, try_number: int = 1):
    pushed: dict[str, object] = {}
    ti = SimpleNamespace(task_id=task_id, dag_id="arrays", run_id="manual__1", try_number=try_number, map_index=2,
                         xcom_push=lambda key, value: pushed.__setitem__(key, value),
                         xcom_pull=lambda **kw: pushed.get(kw.get("key")))
    return {"ti": ti}, pushed


def _deferred(op: ArrayJobOperator, ctx: dict) -> ArrayJobTrigger:
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(ctx)
    path, kwargs = deferred.value.trigger.serialize()
    assert path == "cosmodm_ops.airflow.arrays.ArrayJobTrigger"
    module, cls = path.rsplit(".", 1)
    return getattr(importlib.import_module(module), cls)(**{**kwargs, "poll_interval": 0.05})


class _CountingRunner(AsyncLocalRunner):
    """The real async runner, counting the commands it carries."""

    def __init__(self) -> None:
        super().__init__()
        self.commands = 0

    async def run(self, argv, *, stdin=None, timeout=60):
        self.commands += 1
        return await super().run(argv, stdin=stdin, timeout=timeout)


def _seam(triggers, runner):
    from cosmodm_ops.batch import get_scheduler

    scheduler = get_scheduler("local")

    async def factory():
        return runner

    for t in triggers:
        t._poller = lambda t=t: SitePoller.get(("local", None), scheduler, factory, t.poll_interval)


def test_array_operator_returns_one_outcome_per_element(local_site):
    op = ArrayJobOperator(task_id="chunk", command=["bash", "-c", FAIL_3], array_size=6, array_max_parallel=2,
                          site="local")
    ctx, pushed = _context("chunk")
    trigger = _deferred(op, ctx)
    assert trigger.serialize()[1] == {"job_id": "arrays.manual__1.chunk.m2.t0", "array_size": 6, "scheduler": "local",
                                      "ssh_conn_id": None, "site": "local", "poll_interval": 0.05,
                                      "verify_host_key": True, "max_failures": 8}

    async def first_event():
        return await asyncio.wait_for(trigger.run().__anext__(), 60)

    event = asyncio.run(first_event()).payload
    elements = op.execute_complete(ctx, event)
    assert json.loads(json.dumps(elements)) == elements  # JSON-safe XCom
    assert [(e["index"], e["job_id"], e["state"], e["exit_code"]) for e in elements] == [
        (i, f"arrays.manual__1.chunk.m2.t0.{i}", "failed" if i == 3 else "completed", 3 if i == 3 else 0)
        for i in range(6)]
    assert all(e["elapsed_s"] is not None and e["elapsed_s"] >= 0 for e in elements)
    logs = local_site / "work" / "jobs" / ".cosmodm"
    assert [(logs / f"arrays.manual__1.chunk.m2.t0.{i}.out").read_text() for i in range(6)] == [
        f"item {i}\n" for i in range(6)]
    assert pushed["batch_job"]["array_size"] == 6
    # a retry (try 2) keeps the array's name: a live array would be re-attached, never submitted twice
    assert op.build_spec(_context("chunk", try_number=2)[0]).name == "arrays.manual__1.chunk.m2.t0"


def test_submit_all_arrays_at_once_then_watch_each_without_submitting(local_site, monkeypatch):
    """ArraySubmitOperator: every array over one runner (one login); ArrayJobOperator(job_id=...) only watches."""
    from cosmodm_ops.airflow import ArraySubmitOperator, sites

    runners = []
    real = sites.sync_runner
    monkeypatch.setattr(sites, "sync_runner", lambda *a, **k: runners.append(real(*a, **k)) or runners[-1])
    sub = ArraySubmitOperator(task_id="submit", site="local", arrays=[
        {"command": ["bash", "-c", 'echo "$OFFSET/$COSMODM_ARRAY_INDEX"'], "array_size": n, "env": {"OFFSET": str(o)}}
        for o, n in ((0, 3), (3, 2))])
    ctx, _ = _context("submit")
    ids = sub.execute(ctx)
    assert ids == [{"job_id": "arrays.manual__1.submit.m0.t0", "array_size": 3},
                   {"job_id": "arrays.manual__1.submit.m1.t0", "array_size": 2}]
    assert len(runners) == 1  # one connection for every array
    logs = local_site / "work" / "jobs" / ".cosmodm"
    outcomes = []
    for i, kw in enumerate(ids):
        op = ArrayJobOperator(task_id="chunk", site="local", **kw)
        monkeypatch.setattr(sites, "sync_runner", lambda *a, **k: pytest.fail("the watcher must not connect"))
        wctx, pushed = _context("chunk")
        trigger = _deferred(op, wctx)
        assert trigger.job_id == kw["job_id"] and pushed["batch_job"]["job_id"] == kw["job_id"]

        async def first_event(trigger=trigger):
            return await asyncio.wait_for(trigger.run().__anext__(), 60)

        outcomes.append([(e["index"], e["state"]) for e in op.execute_complete(wctx, asyncio.run(first_event()).payload)])
        monkeypatch.setattr(sites, "sync_runner", real)
        assert [(logs / f"{kw['job_id']}.{j}.out").read_text() for j in range(kw["array_size"])] == [
            f"{3 * i}/{j}\n" for j in range(kw["array_size"])]
    assert outcomes == [[(0, "completed"), (1, "completed"), (2, "completed")], [(0, "completed"), (1, "completed")]]
    with pytest.raises(ValueError, match="give the command to submit, or the job_id"):
        ArrayJobOperator(task_id="c", array_size=2, site="local")


def test_poll_error_raises_for_a_retry(local_site):
    op = ArrayJobOperator(task_id="chunk", command=["true"], array_size=2, site="local")
    with pytest.raises(AirflowException, match="retrying"):
        op.execute_complete(_context("chunk")[0], {"job_id": "x", "state": "error", "message": "ssh down"})
    with pytest.raises(AirflowException, match="not a whole number"):
        ArrayJobOperator(task_id="c", command=["true"], array_size="many", site="local").build_spec(_context("c")[0])


def test_arrays_and_single_jobs_of_a_site_share_one_batched_poll(local_site):
    """Two arrays (5 + 3 elements) and one single job: one status command per poll for all nine."""
    ops = [ArrayJobOperator(task_id=f"chunk{k}", command=["bash", "-c", "sleep 1"], array_size=n, site="local")
           for k, n in ((0, 5), (1, 3))]
    triggers = [_deferred(op, _context(op.task_id)[0]) for op in ops]
    from cosmodm_ops.airflow import BatchJobOperator

    single = BatchJobOperator(task_id="one", command=["sleep", "1"], site="local")
    with pytest.raises(TaskDeferred) as deferred:
        single.execute(_context("one")[0])
    _, kwargs = deferred.value.trigger.serialize()
    triggers.append(BatchJobTrigger(**{**kwargs, "poll_interval": 0.2}))
    for t in triggers:
        t.poll_interval = 0.2
    runner = _CountingRunner()
    _seam(triggers, runner)

    async def main():
        return await asyncio.wait_for(asyncio.gather(*[t.run().__anext__() for t in triggers]), 60)

    events = [e.payload for e in asyncio.run(main())]
    assert [len(e["elements"]) for e in events[:2]] == [5, 3] and events[2]["state"] == "completed"
    assert all(x["state"] == "completed" for e in events[:2] for x in e["elements"])
    polls = next(iter(SitePoller._instances.values())).polls
    assert runner.commands == polls  # one batched command per poll, not one per element or per array
    assert polls < 9 * 3


def test_trigger_resumes_after_a_triggerer_restart(local_site):
    op = ArrayJobOperator(task_id="chunk", command=["bash", "-c", 'sleep 1; [ "$COSMODM_ARRAY_INDEX" != 1 ]'],
                          array_size=3, site="local")
    trigger = _deferred(op, _context("chunk")[0])
    _, kwargs = trigger.serialize()

    async def interrupted():
        task = asyncio.ensure_future(trigger.run().__anext__())
        await asyncio.sleep(0.3)  # the triggerer dies while the elements run
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(interrupted())
    SitePoller._instances.clear()
    again = ArrayJobTrigger(**kwargs)  # a new triggerer process rebuilds it from the serialized kwargs

    async def resumed():
        return await asyncio.wait_for(again.run().__anext__(), 60)

    event = asyncio.run(resumed()).payload
    assert [(e["state"], e["exit_code"]) for e in event["elements"]] == [("completed", 0), ("failed", 1),
                                                                        ("completed", 0)]


# the killed trigger's asyncio subprocess transport is collected after its loop closed (an asyncio
# quirk at interpreter level, not a leak of ours: the array's cancel is asserted below)
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_on_kill_cancels_the_array(local_site):
    op = ArrayJobOperator(task_id="chunk", command=["sleep", "60"], array_size=3, array_max_parallel=1, site="local")
    ctx, pushed = _context("chunk")
    _deferred(op, ctx)
    op.task_instance = ctx["ti"]  # what Airflow sets on a running task
    op.on_kill()
    from cosmodm_ops.batch import get_scheduler
    from cosmodm_ops.batch.runners import LocalRunner

    scheduler = get_scheduler("local")
    ids = scheduler.array_element_ids(pushed["batch_job"]["job_id"], 3)
    assert [s.state.value for s in scheduler.status(LocalRunner(), ids).values()] == ["cancelled"] * 3


def _xcoms(home: Path) -> dict[int, object]:
    with sqlite3.connect(home / "airflow.db") as db:
        rows = db.execute("SELECT map_index, value FROM xcom WHERE dag_id='array_example' AND task_id='chunk' "
                          "AND key='return_value'").fetchall()
    return {m: json.loads(v) if isinstance(v, (str, bytes)) else v for m, v in rows}


def test_dags_test_runs_two_chunks_as_two_arrays(airflow_available, tmp_path: Path):
    home = tmp_path / "home"
    home.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    env = airflow_env(home, EXAMPLES, COSMODM_TEST_OUT=str(out), COSMODM_WORK_ROOT=str(tmp_path / "work"),
                      COSMODM_LOCAL_JOBS=str(tmp_path / "registry"),
                      COSMODM_CONFIG_OVERRIDES='{"site": {"batch": {"poll_interval_s": 1}}}')
    subprocess.run([str(VENV_BIN / "airflow"), "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    res = subprocess.run([str(VENV_BIN / "airflow"), "dags", "test", "array_example"], env=env, capture_output=True,
                         text=True, timeout=300, cwd=REPO)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    xcoms = _xcoms(home)
    assert sorted(xcoms) == [0, 1]  # two task instances, one per chunk
    assert [(e["index"], e["state"], e["exit_code"]) for e in xcoms[0]] == [
        (0, "completed", 0), (1, "failed", 3), (2, "completed", 0), (3, "completed", 0)]
    assert [e["state"] for e in xcoms[1]] == ["completed", "completed"]
    written = sorted(".".join(re.search(r"\.(m\d)\.t0\.(\d)$", p.name).groups()) for p in out.iterdir())
    assert written == ["m0.0", "m0.1", "m0.2", "m0.3", "m1.0", "m1.1"]  # each item exactly once
    assert all(p.read_text() == p.name.rsplit(".", 1)[-1] + "\n" for p in out.iterdir())
