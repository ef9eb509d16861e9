"""One deferrable task per job array: :class:`ArrayJobOperator` submits, :class:`ArrayJobTrigger` watches.

A chunk of N work items becomes ONE batch job array of N elements (Slurm ``--array``, PBS ``-J``,
HTCondor ``queue N``, emulated by LoadLeveler and the local scheduler), and ONE task instance that
defers while the elements run. The trigger registers every element with the site's shared
:class:`~cosmodm_ops.airflow.triggers.SitePoller`, so all elements of all arrays (and single jobs) of a
site are polled with one batched status command per interval over one connection. It fires once,
when every element has ended, with one outcome per element; the task returns that list (XCom)::

    [{"index": 0, "job_id": "123_0", "state": "completed", "exit_code": 0, "elapsed_s": 4.0,
      "max_rss_mb": 35.2, "reason": None}, ...]

The task fails only when the batch system cannot be reached or refuses the submission (Airflow
retries); elements that failed are outcomes, not task failures: the caller (a campaign) decides.
The array's job name has no try number, so a retry while the array still runs re-attaches to it
(idempotent submission) instead of submitting it again.

Each task process logs in to the site on its own, so N chunks submitted by N ``ArrayJobOperator``
tasks cost N SSH logins. :class:`ArraySubmitOperator` submits all the arrays of a fan-out over ONE
connection and returns ``[{"job_id", "array_size"}]``; ``ArrayJobOperator.partial(...).expand_kwargs``
over that list then only watches (``job_id`` given: no submission, no login; the triggerer's shared
poller is the site's one other login)::

    ids = ArraySubmitOperator(task_id="submit", site="hpc", arrays=[{"command": [...], "array_size": 50}, ...])
    ArrayJobOperator.partial(task_id="chunk", site="hpc").expand_kwargs(ids.output)
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import AsyncIterator, Sequence
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException
from airflow.triggers.base import TriggerEvent

from cosmodm_ops.airflow.operators import BatchJobOperator, _site_queue, site_job_spec, submission_errors
from cosmodm_ops.airflow.triggers import BatchJobTrigger, poll_error_event

__all__ = ["OUTCOME_KEYS", "ArrayJobOperator", "ArrayJobTrigger", "ArraySubmitOperator", "array_job_name", "outcome"]

#: Keys of one element's outcome (the XCom of :class:`ArrayJobOperator` is a list of these dicts).
OUTCOME_KEYS = ("index", "job_id", "state", "exit_code", "elapsed_s", "max_rss_mb", "reason")


def outcome(index: int, status: Any) -> dict[str, Any]:
    """One element's JSON-safe outcome from its :class:`~cosmodm_ops.batch.JobStatus`."""
    return {"index": index, "job_id": status.job_id, "state": status.state.value, "exit_code": status.exit_code,
            "elapsed_s": status.elapsed_s, "max_rss_mb": status.max_rss_mb, "reason": status.reason}


class ArrayJobTrigger(BatchJobTrigger):
    """Fires once every element of a job array has reached a final state.

    Parameters
    ----------
    job_id : str
        The array's id as the scheduler's ``submit`` returned it (``123``, ``400[].server``, a local name).
    array_size : int
        Number of elements; their ids come from ``Scheduler.array_element_ids``.
    scheduler, ssh_conn_id, site, poll_interval, verify_host_key, max_failures
        As for :class:`~cosmodm_ops.airflow.triggers.BatchJobTrigger` (the same shared per-site poller).

    Only names and ids are serialized; a restarted triggerer registers the elements again (the ended
    ones are reported at the first poll).
    """

    def __init__(self, job_id: str, array_size: int, scheduler: str, ssh_conn_id: str | None = None,
                 site: str = "local", poll_interval: float = 10.0, verify_host_key: bool = True,
                 max_failures: int = 8) -> None:
        super().__init__(job_id=job_id, scheduler=scheduler, ssh_conn_id=ssh_conn_id, site=site,
                         poll_interval=poll_interval, verify_host_key=verify_host_key, max_failures=max_failures)
        self.array_size = int(array_size)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Stable class path and the kwargs to rebuild the trigger: names and ids only."""
        _, kwargs = super().serialize()
        return "cosmodm_ops.airflow.arrays.ArrayJobTrigger", {**kwargs, "array_size": self.array_size}

    async def run(self) -> AsyncIterator[TriggerEvent]:
        poller = self._poller()
        ids = poller.scheduler.array_element_ids(self.job_id, self.array_size)
        index = {jid: i for i, jid in enumerate(ids)}
        queue: asyncio.Queue = asyncio.Queue()
        for jid in ids:
            poller.watch(jid, queue)
        final: dict[str, Any] = {}
        try:
            while len(final) < len(ids):
                item = await queue.get()
                if isinstance(item, Exception):
                    yield poll_error_event(self.job_id, self.scheduler, self.site, item)
                    return
                if item.job_id in index and item.job_id not in final and item.state.terminal:
                    final[item.job_id] = item
                    poller.unwatch(item.job_id, queue)  # later polls ask only for what still runs
            yield TriggerEvent({"job_id": self.job_id, "state": "done",
                                "elements": [outcome(index[j], final[j]) for j in ids]})
        finally:
            for jid in ids:
                if jid not in final:
                    poller.unwatch(jid, queue)


def array_job_name(ti: Any, index: int) -> str:
    """The name of a task's array number ``index``: no try number (a retry finds the live array)."""
    from cosmodm_ops.batch.base import job_name_for

    return job_name_for(ti.dag_id, ti.run_id, ti.task_id, 0, index)


class ArrayJobOperator(BatchJobOperator):
    """Run ``command`` as a job array of ``array_size`` elements at a site, deferring until all have ended.

    Each element runs the same command with ``COSMODM_ARRAY_INDEX`` (0-based) in its environment and
    writes ``<workdir>/.cosmodm/<name>.<index>.out`` / ``.err``; the task returns the per-element
    outcomes (see the module docstring), whatever their states. ``on_kill`` cancels the whole array.

    Parameters
    ----------
    command : list of str
        The command of every element (templated).
    array_size : int
        Number of elements (templated: may come from an upstream XCom as text).
    array_max_parallel : int, optional
        At most this many elements run at once.
    job_id : str, optional
        An array already submitted (by :class:`ArraySubmitOperator`): watch it, submit nothing.
    site, cores, memory_gb, walltime_min, partition, env, job_label, **kwargs
        As for :class:`~cosmodm_ops.airflow.operators.BatchJobOperator` (site pool included).
    """

    template_fields: Sequence[str] = (*BatchJobOperator.template_fields, "array_size", "job_id")
    ui_color = "#cfe3f0"

    def __init__(self, *, array_size: int | str, command: list[str] | None = None,
                 array_max_parallel: int | None = None, job_id: str | None = None, **kwargs: Any) -> None:
        if command is None and job_id is None:
            msg = "ArrayJobOperator: give the command to submit, or the job_id of an array already submitted"
            raise ValueError(msg)
        super().__init__(command=list(command or ["true"]), **kwargs)  # attach mode: the command ran elsewhere
        self.array_size = array_size
        self.array_max_parallel = array_max_parallel
        self.job_id = job_id

    def execute(self, context: Any) -> None:
        """Submit and defer; with ``job_id``, defer at once on that array (no connection to the site)."""
        if not self.job_id:
            return super().execute(context)
        cfg = self._site()
        spec = self.build_spec(context)
        job_id = str(self.job_id)
        context["ti"].xcom_push(key="batch_job", value={"job_id": job_id, "name": spec.name, "site": self.site,
                                                        "scheduler": cfg.batch.system, "workdir": spec.workdir,
                                                        "array_size": spec.array_size, "memory_gb": spec.memory_gb})
        self.defer(trigger=self.trigger_for(cfg, job_id, spec), method_name="execute_complete")
        return None

    def build_spec(self, context: Any) -> Any:
        """The array's JobSpec: one name for every try (a retry re-attaches to a live array)."""
        ti = context["ti"]
        try:
            size = int(self.array_size)
        except (TypeError, ValueError) as err:
            msg = f"task {ti.task_id}: array_size={self.array_size!r} is not a whole number"
            raise AirflowException(msg) from err
        name = array_job_name(ti, getattr(ti, "map_index", -1))
        return dataclasses.replace(super().build_spec(context), name=name, array_size=size,
                                   array_max_parallel=self.array_max_parallel)

    def trigger_for(self, cfg: Any, job_id: str, spec: Any) -> ArrayJobTrigger:
        """An :class:`ArrayJobTrigger` on the site's shared poller."""
        return ArrayJobTrigger(job_id=job_id, array_size=spec.array_size, scheduler=cfg.batch.system,
                               ssh_conn_id=cfg.ssh_conn_id, site=self.site, poll_interval=cfg.batch.poll_interval_s,
                               verify_host_key=cfg.verify_host_key)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> list[dict[str, Any]]:
        """The per-element outcomes; a poll error raises (Airflow retries and re-attaches)."""
        if event.get("state") != "done":
            msg = f"array {event.get('job_id')} at site {self.site}: {event.get('message') or event.get('state')}"
            raise AirflowException(msg + " (retrying)")
        elements = list(event.get("elements") or [])
        counts: dict[str, int] = {}
        for e in elements:
            counts[e["state"]] = counts.get(e["state"], 0) + 1
        self.log.info("array %s done: %d elements, %s", event.get("job_id"), len(elements), counts)
        return elements


class ArraySubmitOperator(BaseOperator):
    """Submit several job arrays at one site over ONE connection; return ``[{"job_id", "array_size"}]``.

    Parameters
    ----------
    arrays : list of dict
        One ``{"command": [...], "array_size": N, "env": {...}}`` per array (templated: may be an XCom).
    site : str
        Site name (``include/configs/sites/<site>.yaml``).
    array_max_parallel : int, optional
        At most this many elements of each array at once.

    Submission is idempotent by name (array ``i`` of this task is ``array_job_name(ti, i)``): a retry
    returns the arrays still live instead of submitting them again.
    """

    template_fields: Sequence[str] = ("arrays",)
    ui_color = "#cfe3f0"

    def __init__(self, *, arrays: Any, site: str = "local", array_max_parallel: int | None = None,
                 **kwargs: Any) -> None:
        _site_queue(site, kwargs)  # it logs in to the site: only a worker that can reach it may run it
        super().__init__(**kwargs)
        self.arrays = arrays
        self.site = site
        self.array_max_parallel = array_max_parallel

    def execute(self, context: Any) -> list[dict[str, Any]]:
        from cosmodm_ops.airflow.sites import scheduler_for, site_config, sync_runner
        from cosmodm_ops.batch.budget import resources_for_try

        cfg = site_config(self.site)
        scheduler = scheduler_for(cfg.batch.system)
        res = resources_for_try(cfg.batch, None, 1)
        runner = sync_runner(cfg.ssh_conn_id, cfg.verify_host_key)
        out: list[dict[str, Any]] = []
        try:
            with submission_errors(self.site, "array submission"):
                for i, arr in enumerate(self.arrays or []):
                    spec = dataclasses.replace(
                        site_job_spec(cfg, array_job_name(context["ti"], i), arr["command"], arr.get("env"), res),
                        array_size=int(arr["array_size"]), array_max_parallel=self.array_max_parallel)
                    if not cfg.ssh_conn_id:
                        os.makedirs(spec.workdir, exist_ok=True)
                    job_id = scheduler.submit(runner, spec)
                    out.append({"job_id": job_id, "array_size": spec.array_size})
        finally:
            close = getattr(runner, "close", None)
            if close:
                close()
        self.log.info("submitted %d array(s) at site %s over one connection: %s", len(out), self.site,
                      [o["job_id"] for o in out])
        return out
