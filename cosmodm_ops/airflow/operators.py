"""Operators: submit a batch job and defer; move data; translate outcomes for Airflow, once.

Outcomes are sorted by what a retry would achieve (STYLE.md habit 7):

=====================================  ===========================================
final state                            task outcome
=====================================  ===========================================
completed (exit 0)                     success; accounting returned (XCom)
failed, exit 3 (some CCDs failed)      success with ``partial=True``
failed, exit 65 (bad input)            fail, no retry (AirflowFailException)
cancelled by the submitting account    fail, no retry (someone meant it; on_kill cancels so)
cancelled by uid 0 (Slurm's            raise: Airflow retries (the site stopped the job:
"CANCELLED by 0": an admin, the site)  the work still has to be done)
failed (other codes, 75 = transient)   raise: Airflow retries
timeout, node_fail, preempted          raise: Airflow retries (walltime scaled by
                                       ``retry_scale ** (try_number - 1)``)
out of memory (see budget.py: state    raise with "out of memory" while the stage's budget
OUT_OF_MEMORY, exit 71 under ulimit,   gives the next try more memory (memory x
SIGKILL at MaxRSS >= 90% of the limit) ``retry_memory_factor``, up to ``max_memory_gb``);
                                       at the cap: fail, no retry
poll error (site unreachable)          raise: Airflow retries
=====================================  ===========================================

Resources come from ``site.batch.stages.<stage>`` (cores, memory_gb, walltime_min, retry_memory_factor,
max_memory_gb), falling back to ``site.batch``; explicit operator arguments win. The task's Celery
queue is the site's ``site.queue`` (read when the DAG is parsed) unless ``queue`` is given.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from cosmodm_ops.airflow.triggers import BatchJobTrigger

__all__ = ["EXIT_BAD_INPUT", "EXIT_PARTIAL", "BatchJobOperator", "TransferOperator", "cancelled_by_site",
           "site_job_spec"]

EXIT_PARTIAL = 3
EXIT_BAD_INPUT = 65
#: argparse's exit code for a bad command line: deterministic, so never retried either.
EXIT_USAGE = 2


def _work_root(site_cfg: Any) -> Path:
    from cosmodm_ops.workflows.nightly import _site_path

    return _site_path(os.environ.get("COSMODM_WORK_ROOT") or site_cfg.work_root)


#: Worker environment variables a job inherits (when set): the job's ``load_config`` must see the
#: same deployment overrides as the worker that planned it (RAM-disk limits, versions, ...).
FORWARDED_ENV = ("COSMODM_CONFIG_OVERRIDES",)


def _forwarded_env() -> dict[str, str]:
    return {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}


def site_job_spec(cfg: Any, name: str, command: Sequence[str], env: dict[str, str] | None, res: Any,
                  partition: str | None = None) -> Any:
    """The JobSpec of one job at a site: its work root, batch defaults, resources ``res`` and forwarded env."""
    from cosmodm_ops.batch.base import JobSpec

    b = cfg.batch
    return JobSpec(
        name=name, command=[str(c) for c in command], workdir=str(_work_root(cfg) / "jobs"),
        nodes=b.nodes, cores=res.cores, memory_gb=res.memory_gb, walltime_min=res.walltime_min,
        partition=partition or b.partition, account=b.account, qos=b.qos,
        env=_forwarded_env() | dict(env or {}), ramdisk=cfg.ramdisk.path, memory_ulimit=b.memory_limit == "ulimit",
    )


@contextmanager
def submission_errors(site: str, what: str) -> Iterator[None]:
    """Translate a submission's batch-layer errors once, at the Airflow boundary.

    An unreachable site (:class:`TransportError`) and a refused submission (:class:`SubmitError`, with the end of
    its stderr) become :class:`AirflowException`, so Airflow retries; ``what`` names the submission in the message.
    """
    from cosmodm_ops.batch.base import SubmitError, TransportError

    try:
        yield
    except TransportError as err:
        msg = f"site {site}: cannot reach the batch system: {err}"
        raise AirflowException(msg) from err
    except SubmitError as err:
        msg = f"site {site}: {what} failed (exit {err.retcode}): {err.stderr[-800:]}"
        raise AirflowException(msg) from err


def _site_queue(site: str, kwargs: dict[str, Any]) -> None:
    """Put the site's Celery queue (``site.queue``) into an operator's kwargs unless one is given."""
    if "queue" not in kwargs:
        from cosmodm_ops.config import site_queue

        queue = site_queue(site)
        if queue:
            kwargs["queue"] = queue


class BatchJobOperator(BaseOperator):
    """Run a command as a batch job at a site (Slurm, PBS, LoadLeveler, HTCondor or local), deferring.

    Parameters
    ----------
    command : list of str
        The command as an argument list (templated). Quoted with ``shlex`` where a shell is involved.
    site : str
        Site config name (``include/configs/sites/<site>.yaml``): batch system, SSH connection id,
        resources, RAM disk.
    cores, memory_gb, walltime_min, partition : optional
        Override the site's defaults.
    env : dict, optional
        Environment for the job (templated). Never put secrets here. ``$COSMODM_CONFIG_OVERRIDES`` of the
        worker is passed on unless given here.
    stage : str, optional
        Pipeline stage (``single_epoch``, ``coadd``, ``calibrate``): its budget ``site.batch.stages.<stage>``.
    retry_scale : float
        Walltime grows by this factor per retry (timeouts); memory follows the stage budget.
    job_label : str, optional
        Shown as the mapped task's label (``map_index_template="{{ task.job_label }}"``).

    With ``COSMODM_POOLS=1`` where the DAGs are parsed, the task runs in the site's pool ``cosmodm_<site>``
    (unless ``pool`` is given); the pool counts deferred tasks, so it caps the jobs every DAG has at the site.
    The task goes to the site's Celery queue (``site.queue``) unless ``queue`` is given.
    """

    template_fields: Sequence[str] = ("command", "env", "job_label")
    ui_color = "#d9ecf2"

    def __init__(self, *, command: list[str], site: str = "local", cores: int | None = None,
                 memory_gb: float | None = None, walltime_min: int | None = None, partition: str | None = None,
                 env: dict[str, str] | None = None, retry_scale: float = 1.5, job_label: str | None = None,
                 stage: str | None = None, **kwargs: Any) -> None:
        _site_queue(site, kwargs)
        if "pool" not in kwargs and os.environ.get("COSMODM_POOLS", "").lower() in {"1", "true", "yes"}:
            # the site's pool (`cosmodm config pools`; opt-in: Airflow never schedules a task whose pool is missing)
            from cosmodm_ops.batch.base import pool_name

            kwargs["pool"] = pool_name(site)
        super().__init__(**kwargs)
        self.command = command
        self.site = site
        self.cores = cores
        self.memory_gb = memory_gb
        self.walltime_min = walltime_min
        self.partition = partition
        self.env = env or {}
        self.retry_scale = retry_scale
        self.job_label = job_label
        self.stage = stage

    # -- lazy pieces (light constructor; nothing touches a site at parse time)
    def _site(self) -> Any:
        from cosmodm_ops.airflow.sites import site_config

        return site_config(self.site)

    def try_resources(self, try_number: int) -> Any:
        """Cores, memory and walltime of one try (:func:`cosmodm_ops.batch.budget.resources_for_try`)."""
        from cosmodm_ops.batch.budget import resources_for_try

        return resources_for_try(self._site().batch, self.stage, try_number, cores=self.cores,
                                 memory_gb=self.memory_gb, walltime_min=self.walltime_min,
                                 walltime_scale=self.retry_scale)

    def build_spec(self, context: Any) -> Any:
        """The JobSpec of this try: name from DAG, run, task, map index and try; resources from the stage budget."""
        from cosmodm_ops.batch.base import job_name_for

        cfg = self._site()
        ti = context["ti"]
        name = job_name_for(ti.dag_id, ti.run_id, ti.task_id, ti.try_number, getattr(ti, "map_index", -1))
        return site_job_spec(cfg, name, self.command, self.env, self.try_resources(ti.try_number), self.partition)

    def execute(self, context: Any) -> None:
        from cosmodm_ops.airflow.sites import scheduler_for, sync_runner

        cfg = self._site()
        spec = self.build_spec(context)
        Path(spec.workdir).mkdir(parents=True, exist_ok=True) if not cfg.ssh_conn_id else None
        scheduler = scheduler_for(cfg.batch.system)
        runner = sync_runner(cfg.ssh_conn_id, cfg.verify_host_key)
        with submission_errors(self.site, f"submission of {spec.name}"):
            job_id = scheduler.submit(runner, spec)
        self.log.info("submitted %s as %s job %s at site %s", spec.name, cfg.batch.system, job_id, self.site)
        context["ti"].xcom_push(key="batch_job", value={"job_id": job_id, "name": spec.name, "site": self.site,
                                                        "scheduler": cfg.batch.system, "workdir": spec.workdir,
                                                        "array_size": spec.array_size,
                                                        "memory_gb": spec.memory_gb})
        self.defer(trigger=self.trigger_for(cfg, job_id, spec), method_name="execute_complete")

    def trigger_for(self, cfg: Any, job_id: str, spec: Any) -> BatchJobTrigger:
        """The trigger that watches the submitted job (subclasses watch arrays)."""
        return BatchJobTrigger(job_id=job_id, scheduler=cfg.batch.system, ssh_conn_id=cfg.ssh_conn_id,
                               site=self.site, poll_interval=cfg.batch.poll_interval_s,
                               verify_host_key=cfg.verify_host_key)

    def _diagnostics(self, context: Any) -> str:
        """Tail of the job's stderr when the job ran here (remote logs stay on the site)."""
        info = context["ti"].xcom_pull(task_ids=context["ti"].task_id, key="batch_job",
                                       map_indexes=getattr(context["ti"], "map_index", None)) or {}
        if not info:
            return ""
        for suffix in (".err", ".out"):
            path = Path(info.get("workdir", "")) / ".cosmodm" / f"{info.get('name')}{suffix}"
            if path.is_file():
                text = path.read_text(errors="replace")[-2000:]
                if text.strip():
                    return f"\n--- tail of {path.name} ---\n{text}"
        return ""

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        """Map the final state to success, fail-without-retry or retry (see the module table)."""
        state = event.get("state")
        job = event.get("job_id")
        code = event.get("exit_code")
        accounting = {"job_id": job, "state": state, "exit_code": code, "elapsed_s": event.get("elapsed_s"),
                      "max_rss_mb": event.get("max_rss_mb"), "nodes": event.get("nodes"), "site": self.site,
                      "partial": False}
        if state == "completed" or (state == "failed" and code == EXIT_PARTIAL):
            accounting["partial"] = code == EXIT_PARTIAL
            self.log.info("job %s done: %s", job, accounting)
            return accounting
        from cosmodm_ops.batch.budget import memory_verdict

        where = f"job {job} at site {self.site}: {state}" + (f", exit code {code}" if code is not None else "")
        if event.get("message"):
            where += f": {event['message']}"
        if state == "failed" and code in (EXIT_BAD_INPUT, EXIT_USAGE):
            kind = "bad input" if code == EXIT_BAD_INPUT else "command-line usage error"
            msg = f"{where} ({kind}: not retried){self._diagnostics(context)}"
            raise AirflowFailException(msg)
        if state == "cancelled":
            if cancelled_by_site(event):
                raise AirflowException(f"{where} (cancelled by the site, uid 0: retrying)")
            raise AirflowFailException(f"{where} (cancelled: not retried)")
        res = self.try_resources(context["ti"].try_number)
        oom = memory_verdict(state, code, event.get("max_rss_mb"), res.memory_gb)
        if oom:
            if res.next_memory_gb <= res.memory_gb:
                msg = (f"{where}: out of memory: {oom}; already at the stage's maximum of {res.max_memory_gb} GB "
                       f"(not retried: raise site.batch.stages.{self.stage or '<stage>'}.max_memory_gb)"
                       f"{self._diagnostics(context)}")
                raise AirflowFailException(msg)
            msg = f"{where}: out of memory: {oom} (retrying with {res.next_memory_gb} GB){self._diagnostics(context)}"
            raise AirflowException(msg)
        msg = f"{where} (retrying){self._diagnostics(context)}"
        raise AirflowException(msg)

    def on_kill(self) -> None:
        """Cancel the remote job when the task is killed."""
        from cosmodm_ops.airflow.sites import scheduler_for, sync_runner

        try:
            info = self.task_instance.xcom_pull(task_ids=self.task_id, key="batch_job")  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001
            info = None
        if not info:
            return
        cfg = self._site()
        try:
            scheduler_for(info["scheduler"]).cancel(sync_runner(cfg.ssh_conn_id, cfg.verify_host_key), info["job_id"])
            self.log.info("cancelled job %s", info["job_id"])
        except Exception as err:  # noqa: BLE001 - best effort on kill
            self.log.warning("could not cancel job %s: %s", info.get("job_id"), err)


def cancelled_by_site(event: dict[str, Any]) -> bool:
    """True when a cancelled job was cancelled by uid 0 (Slurm's ``CANCELLED by 0``): the site, not our account."""
    import re

    text = " ".join(str(event.get(k) or "") for k in ("raw_state", "reason", "message"))
    return re.search(r"\bcancelled by 0\b", text, re.IGNORECASE) is not None


class TransferOperator(BaseOperator):
    """Bring files to a site with checksums: local (hardlink/copy), rsync over SSH, or Globus (deferred).

    Parameters
    ----------
    items : list of dict
        ``{"src": path, "dst": path, "sha256": optional}`` (templated; usually an upstream XCom).
    site : str
        Site config name; its ``transfer.method`` chooses the implementation.
    """

    template_fields: Sequence[str] = ("items",)
    ui_color = "#e8f2d9"

    def __init__(self, *, items: Any, site: str = "local", **kwargs: Any) -> None:
        _site_queue(site, kwargs)
        super().__init__(**kwargs)
        self.items = items
        self.site = site

    def execute(self, context: Any) -> dict[str, Any]:
        from cosmodm_ops.airflow.sites import site_config
        from cosmodm_ops.transfer import TransferError, TransferItem, get_transfer

        cfg = site_config(self.site)
        items = [TransferItem(src=i["src"], dst=i["dst"], sha256=i.get("sha256")) for i in (self.items or [])]
        if not items:
            self.log.info("nothing to transfer")
            return {"files": 0, "bytes": 0}
        method = cfg.transfer.method
        if method == "globus":
            from cosmodm_ops.airflow.transfers import globus_transfer_from_connection
            from cosmodm_ops.airflow.triggers import TransferTrigger

            transfer = globus_transfer_from_connection(cfg.transfer.globus_conn_id)
            task_id = transfer.submit(items, source=cfg.transfer.source_endpoint, dest=cfg.transfer.dest_endpoint,
                                      deadline_min=cfg.transfer.deadline_min,
                                      label=f"{context['ti'].dag_id} {context['ti'].run_id}"[:128])
            self.defer(trigger=TransferTrigger(task_id=task_id, globus_conn_id=cfg.transfer.globus_conn_id),
                       method_name="execute_complete")
        try:
            transfer = get_transfer(method, site=cfg)
            result = transfer.run(items)
        except TransferError as err:
            raise AirflowException(f"transfer to site {self.site} failed: {err}") from err
        self.log.info("transferred %d file(s), %d bytes (%s)", result["files"], result["bytes"], method)
        return result

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        if event.get("status") == "SUCCEEDED":
            return event
        why = "; ".join(event.get("events") or []) or event.get("message") or "no error event"
        msg = (f"Globus task {event.get('task_id')} ended {event.get('status')} ({event.get('faults') or 0} fault(s)): "
               f"{why} (retrying)")
        raise AirflowException(msg)
