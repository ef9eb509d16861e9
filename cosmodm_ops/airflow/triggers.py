"""Triggers: watch batch jobs and transfers from the triggerer, restart-safe.

``BatchJobTrigger`` does not poll on its own: every trigger of a site registers its job id
with one :class:`SitePoller` per (scheduler, connection) in the triggerer process, which
runs ONE batched status command per interval for all of that site's jobs over ONE shared
connection, and hands each trigger its job's state. A trigger rebuilt from
:meth:`BatchJobTrigger.serialize` (a restarted triggerer) simply registers again.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any, ClassVar

from airflow.triggers.base import BaseTrigger, TriggerEvent

__all__ = ["BatchJobTrigger", "SitePoller", "TransferTrigger", "poll_error_event"]

log = logging.getLogger(__name__)


class SitePoller:
    """One poll loop per (scheduler, connection, event loop): batched status for many jobs.

    Parameters
    ----------
    scheduler : Scheduler
        The site's scheduler (builds the batched status command, parses its output).
    runner_factory : async callable
        Returns the (shared) async runner; called again after a transport failure.
    interval : float
        Seconds between polls.
    max_failures : int
        Consecutive transport failures before every watcher gets the error.
    """

    _instances: ClassVar[dict[tuple[Any, ...], SitePoller]] = {}

    def __init__(self, scheduler: Any, runner_factory: Any, interval: float, max_failures: int = 8) -> None:
        self.scheduler = scheduler
        self.runner_factory = runner_factory
        self.interval = interval
        self.max_failures = max_failures
        self.watchers: dict[str, list[asyncio.Queue]] = {}
        self.polls = 0
        self._task: asyncio.Task | None = None

    @classmethod
    def get(cls, key: tuple[Any, ...], scheduler: Any, runner_factory: Any, interval: float,
            max_failures: int = 8) -> SitePoller:
        """The poller for ``key`` in the running event loop (created on first use)."""
        loop = asyncio.get_running_loop()
        full = (*key, id(loop))
        poller = cls._instances.get(full)
        if poller is None:
            poller = cls(scheduler, runner_factory, interval, max_failures)
            cls._instances[full] = poller
        poller.interval = min(poller.interval, interval)
        return poller

    def watch(self, job_id: str, queue: asyncio.Queue | None = None) -> asyncio.Queue:
        """Register interest in a job; its states arrive on the returned queue.

        ``queue``: deliver to this queue (one queue for many jobs: the elements of an array); new by default.
        """
        queue = asyncio.Queue() if queue is None else queue
        self.watchers.setdefault(job_id, []).append(queue)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._loop())
        return queue

    def unwatch(self, job_id: str, queue: asyncio.Queue) -> None:
        """Stop watching (the loop ends by itself when nobody watches)."""
        queues = self.watchers.get(job_id, [])
        if queue in queues:
            queues.remove(queue)
        if not queues:
            self.watchers.pop(job_id, None)

    async def _loop(self) -> None:
        failures = 0
        runner = None
        while self.watchers:
            ids = sorted(self.watchers)
            try:
                if runner is None:
                    runner = await self.runner_factory()
                statuses = await self.scheduler.status_async(runner, ids)
                self.polls += 1
                failures = 0
            except Exception as err:  # noqa: BLE001 - transport or scheduler hiccup: back off, retry
                failures += 1
                runner = None
                delay = min(60.0, self.interval * 2 ** min(failures, 6)) * (0.5 + random.random() / 2)
                log.warning("status poll failed (%d/%d): %s; retrying in %.0f s",
                            failures, self.max_failures, type(err).__name__, delay)
                if failures >= self.max_failures:
                    for queues in list(self.watchers.values()):
                        for q in queues:
                            q.put_nowait(err)
                    failures = 0
                await asyncio.sleep(delay)
                continue
            for job_id, status in statuses.items():
                for q in self.watchers.get(job_id, []):
                    q.put_nowait(status)
            await asyncio.sleep(self.interval)


def poll_error_event(job_id: str, scheduler: str, site: str, err: Exception) -> TriggerEvent:
    """The event a job's trigger yields when its site's poller gave up (the operator raises: Airflow retries)."""
    return TriggerEvent({"job_id": job_id, "state": "error",
                         "message": f"cannot poll {scheduler} at site {site}: {type(err).__name__}: {err}"})


class BatchJobTrigger(BaseTrigger):
    """Fires when a batch job reaches a final state.

    Parameters
    ----------
    job_id : str
        The scheduler's job id.
    scheduler : str
        Batch system name (``local``, ``slurm``, ``pbs``, ``loadleveler``, ``htcondor``).
    ssh_conn_id : str, optional
        Airflow SSH connection of the site; None = this machine.
    site : str
        Site name (only for logs and grouping).
    poll_interval : float
        Seconds between (batched) polls.
    verify_host_key : bool
        Verify the SSH host key (the site may turn it off; then a warning on every connection).
    max_failures : int
        Consecutive failed polls before the trigger reports an error (the task then retries).
    """

    def __init__(self, job_id: str, scheduler: str, ssh_conn_id: str | None = None, site: str = "local",
                 poll_interval: float = 10.0, verify_host_key: bool = True, max_failures: int = 8) -> None:
        super().__init__()
        self.job_id = str(job_id)
        self.scheduler = scheduler
        self.ssh_conn_id = ssh_conn_id
        self.site = site
        self.poll_interval = float(poll_interval)
        self.verify_host_key = bool(verify_host_key)
        self.max_failures = int(max_failures)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """Stable class path and the kwargs to rebuild the trigger: names only, never secrets."""
        return (
            "cosmodm_ops.airflow.triggers.BatchJobTrigger",
            {"job_id": self.job_id, "scheduler": self.scheduler, "ssh_conn_id": self.ssh_conn_id,
             "site": self.site, "poll_interval": self.poll_interval, "verify_host_key": self.verify_host_key,
             "max_failures": self.max_failures},
        )

    def _poller(self) -> SitePoller:
        """A seam for testing: the shared poller of this trigger's site."""
        from cosmodm_ops.airflow.sites import async_runner, scheduler_for

        async def factory() -> Any:
            return await async_runner(self.ssh_conn_id, self.verify_host_key)

        return SitePoller.get((self.scheduler, self.ssh_conn_id), scheduler_for(self.scheduler), factory,
                              self.poll_interval, self.max_failures)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        poller = self._poller()
        queue = poller.watch(self.job_id)
        try:
            while True:
                item = await queue.get()
                if isinstance(item, Exception):
                    yield poll_error_event(self.job_id, self.scheduler, self.site, item)
                    return
                if item.state.terminal:
                    event = asdict(item)
                    event["state"] = item.state.value
                    yield TriggerEvent(event)
                    return
        finally:
            poller.unwatch(self.job_id, queue)


class TransferTrigger(BaseTrigger):
    """Fires when a Globus transfer task ends (succeeded, failed, or deadline passed).

    Parameters
    ----------
    task_id : str
        Globus transfer task id.
    globus_conn_id : str
        Airflow connection with the client id (login) and secret (password).
    poll_interval : float
        Seconds between polls.
    """

    def __init__(self, task_id: str, globus_conn_id: str, poll_interval: float = 30.0) -> None:
        super().__init__()
        self.task_id = task_id
        self.globus_conn_id = globus_conn_id
        self.poll_interval = float(poll_interval)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return ("cosmodm_ops.airflow.triggers.TransferTrigger",
                {"task_id": self.task_id, "globus_conn_id": self.globus_conn_id, "poll_interval": self.poll_interval})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from cosmodm_ops.airflow.transfers import globus_transfer_from_connection

        transfer = await asyncio.to_thread(globus_transfer_from_connection, self.globus_conn_id)
        while True:
            status = await asyncio.to_thread(transfer.status, self.task_id)
            if status["done"]:
                yield TriggerEvent(status)
                return
            await asyncio.sleep(self.poll_interval)
