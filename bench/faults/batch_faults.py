"""The batch rows of ``make faults``: restart sshd, restart slurmctld, scancel from outside, a job over its walltime.

Tier ``slurm``: the private key-only sshd and the one-node Slurm with accounting of ``tests/fixtures/services.py``
(every daemon our child, stopped by PID). Each row drives the platform's batch layer as a deferred
``BatchJobOperator`` task does, with the platform's own code at every step: the JobSpec of try n
(``BatchJobOperator.try_resources``: walltime and memory of the try), ``SlurmScheduler.submit`` over
``SSHRunner``, ``BatchJobTrigger`` (the shared ``SitePoller``, ``AsyncSSHRunner``) watching under asyncio as the
triggerer does, and ``BatchJobOperator.execute_complete`` deciding success, retry (Airflow's next try: a new
job) or failure. Each job sleeps, then appends its Slurm job id to ``products/<item>.done``:

* lost: items without a ``.done`` line at the end; duplicated: extra lines (a second job finished the same work);
* recovery_s: per row (see each docstring).
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import secrets
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bench.faults import FaultEnv, FaultResult, fault

__all__ = ["count_products", "job_over_walltime", "restart_slurmctld", "restart_sshd", "scancel_from_outside"]

CONN_ID = "cosmodm_faults_slurm"
_MAX_TRIES = 3
_POLL_S = 2.0


@dataclass
class SlurmSite:
    """The services of the tier and a job folder of the SSH user."""

    sshd: Any
    slurm: Any
    workdir: Path
    root: Path

    def close(self) -> None:
        from cosmodm_ops.batch.ssh import AsyncSSHRunner

        AsyncSSHRunner.reset_shared()
        try:
            self.slurm.stop()
        finally:
            self.sshd.cleanup()
            shutil.rmtree(self.workdir, ignore_errors=True)
            shutil.rmtree(self.root, ignore_errors=True)
            os.environ.pop(f"AIRFLOW_CONN_{CONN_ID.upper()}", None)


def _start(env: FaultEnv) -> SlurmSite:
    from tests.fixtures.services import SSHD, SlurmCluster

    root = env.workdir / "slurm-site"
    root.mkdir(parents=True)
    env.workdir.chmod(0o755)
    root.chmod(0o755)
    sshd = SSHD.create(root / "sshd")
    sshd.start()
    slurm = SlurmCluster.create(root / "slurm")
    try:
        slurm.start(install_global_conf=False)
    except Exception:
        sshd.cleanup()
        raise
    sshd.use_env(SLURM_CONF=str(slurm.conf))
    account = pwd.getpwnam(sshd.user)
    work = Path(account.pw_dir) / f"cosmodm-faults-{secrets.token_hex(3)}"
    work.mkdir()
    os.chown(work, account.pw_uid, account.pw_gid)
    os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = sshd.airflow_conn_json()
    return SlurmSite(sshd, slurm, work, root)


def _site(env: FaultEnv) -> SlurmSite:
    return env.service("slurm", _start)


@dataclass
class Item:
    """One unit of work (one mapped task instance) and its tries."""

    name: str
    sleep_s: int
    walltime_min: int = 10
    tries: list[dict[str, Any]] = field(default_factory=list)
    outcome: str = "pending"


def _operator(item: Item) -> Any:
    from cosmodm_ops.airflow.operators import BatchJobOperator

    return BatchJobOperator(task_id=item.name, command=["true"], site="local", cores=1, memory_gb=0.5,
                            walltime_min=item.walltime_min)


def _ctx(item: Item, try_number: int) -> dict[str, Any]:
    ti = SimpleNamespace(task_id=item.name, dag_id="faults", run_id="batch", try_number=try_number, map_index=-1,
                         xcom_pull=lambda **kw: None)
    return {"ti": ti}


def _submit(site: SlurmSite, row: str, item: Item) -> str:
    """Submit the item's next try as the operator would; returns the job id."""
    from cosmodm_ops.batch import JobSpec, get_scheduler
    from cosmodm_ops.batch.base import job_name_for
    from cosmodm_ops.batch.ssh import SSHRunner

    n = len(item.tries) + 1
    res = _operator(item).try_resources(n)
    products = site.workdir / "products"
    cmd = f"sleep {item.sleep_s} && mkdir -p {products} && echo $SLURM_JOB_ID >> {products}/{item.name}.done"
    spec = JobSpec(name=job_name_for("faults", row, item.name, n), command=["bash", "-c", cmd],
                   workdir=str(site.workdir), cores=res.cores, memory_gb=res.memory_gb, walltime_min=res.walltime_min)
    runner = SSHRunner.from_airflow_connection(CONN_ID)
    try:
        job_id = get_scheduler("slurm").submit(runner, spec)
    finally:
        runner.close()
    item.tries.append({"try": n, "job_id": job_id, "walltime_min": res.walltime_min, "submitted": time.time()})
    return job_id


async def _watch(job_id: str) -> dict[str, Any]:
    from cosmodm_ops.airflow.triggers import BatchJobTrigger

    trigger = BatchJobTrigger(job_id=job_id, scheduler="slurm", ssh_conn_id=CONN_ID, site="faults",
                              poll_interval=_POLL_S)
    async for event in trigger.run():
        return dict(event.payload)
    return {"job_id": job_id, "state": "error", "message": "trigger ended without an event"}


async def _drive(site: SlurmSite, row: str, item: Item) -> None:
    """Submit, watch, decide; retry as Airflow would until success or a final failure."""
    from airflow.sdk.exceptions import AirflowException, AirflowFailException

    while len(item.tries) < _MAX_TRIES:
        job_id = await asyncio.to_thread(_submit, site, row, item)
        event = await _watch(job_id)
        tr = item.tries[-1]
        tr.update(state=event.get("state"), raw_state=event.get("raw_state"), ended=time.time())
        try:
            _operator(item).execute_complete(_ctx(item, tr["try"]), event)
        except AirflowFailException as err:
            item.outcome = f"failed, not retried: {str(err)[:120]}"
            return
        except AirflowException as err:
            tr["decision"] = str(err).splitlines()[0][:160]
            continue
        item.outcome = "success"
        return
    item.outcome = "failed after the last try"


class _Workload:
    """The items' drivers on an event loop in a thread (the triggerer), while the row injects from this one."""

    def __init__(self, site: SlurmSite, row: str, items: list[Item]) -> None:
        from cosmodm_ops.airflow.triggers import SitePoller
        from cosmodm_ops.batch.ssh import AsyncSSHRunner

        AsyncSSHRunner.reset_shared()
        SitePoller._instances.clear()
        shutil.rmtree(site.workdir / "products", ignore_errors=True)
        self.site, self.row, self.items = site, row, items
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        async def all_items() -> None:
            await asyncio.gather(*(_drive(self.site, self.row, it) for it in self.items))

        try:
            asyncio.run(all_items())
        except BaseException as err:  # noqa: BLE001 - reported in the row
            self.error = err

    def polls(self) -> int:
        from cosmodm_ops.airflow.triggers import SitePoller

        return sum(p.polls for p in list(SitePoller._instances.values()))

    def running(self, n: int, timeout: float = 300) -> list[str]:
        """Wait until ``n`` first-try jobs run (squeue as root); their job ids."""
        end = time.time() + timeout
        while time.time() < end and self.thread.is_alive():
            ids = [it.tries[0]["job_id"] for it in self.items if it.tries]
            if len(ids) >= n:
                out = self.site.slurm.run("squeue", "-h", "-t", "R", "-o", "%i", check=False).stdout.split()
                if len(set(ids) & set(out)) >= n:
                    return ids
            time.sleep(0.3)
        msg = f"{n} jobs never ran together ({[it.tries for it in self.items]}); {self.error}"
        raise RuntimeError(msg)

    def next_poll_after(self, timeout: float = 300) -> float | None:
        """Seconds until the site's poller completes a status poll again (the platform sees its jobs)."""
        t0, p0 = time.time(), self.polls()
        while time.time() - t0 < timeout:
            if self.polls() > p0:
                return time.time() - t0
            time.sleep(0.05)
        return None

    def finish(self, timeout: float = 900) -> None:
        self.thread.join(timeout)
        if self.thread.is_alive():
            msg = f"the workload did not end in {timeout:.0f} s: {[it.tries for it in self.items]}"
            raise RuntimeError(msg)
        if self.error:
            raise self.error

    def count(self) -> tuple[int, int, dict[str, Any]]:
        """(lost, duplicated, details) from the products folder."""
        lost, duplicated = count_products(self.site.workdir / "products", [it.name for it in self.items])
        info = {it.name: {"outcome": it.outcome, "tries": [{k: t.get(k) for k in ("job_id", "walltime_min", "state",
                                                                                   "raw_state")} for t in it.tries]}
                for it in self.items}
        return lost, duplicated, info

    def survived(self) -> bool:
        return all(it.outcome == "success" for it in self.items)


def count_products(folder: Path, names: list[str]) -> tuple[int, int]:
    """(lost, duplicated): items without a line in ``<name>.done``; lines beyond one (jobs that did it again)."""
    lost = duplicated = 0
    for name in names:
        path = folder / f"{name}.done"
        lines = path.read_text().split() if path.is_file() else []
        lost += not lines
        duplicated += max(0, len(lines) - 1)
    return lost, duplicated


def _result(name: str, injected: str, action: str, work: _Workload, recovery: float | None,
            extra: dict[str, Any] | None = None) -> FaultResult:
    lost, duplicated, info = work.count()
    retried = sum(len(it.tries) - 1 for it in work.items)
    action = f"{action}; {retried} retr{'y' if retried == 1 else 'ies'}; " + \
        ", ".join(f"{it.name} {it.outcome}" for it in work.items)
    return FaultResult(name, injected, action, work.survived(), lost, duplicated,
                       None if recovery is None else round(recovery, 1), json.dumps({**info, **(extra or {})}))


@fault("restart_sshd", tier="slurm")
def restart_sshd(env: FaultEnv) -> FaultResult:
    """Stop the site's sshd for 5 s (open sessions drop) while 3 jobs run; recovery: until the next good poll."""
    site = _site(env)
    work = _Workload(site, "sshd", [Item(f"job{i}", 25) for i in range(3)])
    work.running(3)
    t0 = time.time()
    site.sshd.stop()
    time.sleep(5)
    site.sshd.start()
    rec = work.next_poll_after()
    recovery = None if rec is None else time.time() - t0
    work.finish()
    return _result("restart_sshd", "3 Slurm jobs running, watched over SSH",
                   "batch layer over real sshd + Slurm: the site poller's SSH connection dropped; it backed off, "
                   "reconnected (pinned host key) and kept watching; no job resubmitted", work, recovery)


@fault("restart_slurmctld", tier="slurm")
def restart_slurmctld(env: FaultEnv) -> FaultResult:
    """Stop slurmctld for 5 s while 3 jobs run, then start it again from its saved state (no ``-i``)."""
    from tests.fixtures.services import _stop_pid

    site = _site(env)
    work = _Workload(site, "ctld", [Item(f"job{i}", 25) for i in range(3)])
    work.running(3)
    t0 = time.time()
    _stop_pid(site.slurm.procs.pop("slurmctld"), timeout=15)
    time.sleep(5)
    site.slurm._spawn("slurmctld", ["/usr/sbin/slurmctld", "-D"])
    site.slurm._wait(lambda: site.slurm._ok(["scontrol", "ping"]), "slurmctld", 60)
    t_up = time.time() - t0
    queue = site.slurm.run("squeue", "-h", "-o", "%i|%T", check=False).stdout.split()
    rec = work.next_poll_after()
    recovery = None if rec is None else time.time() - t0
    work.finish()
    return _result("restart_slurmctld", "3 Slurm jobs running",
                   f"batch layer over real sshd + Slurm: slurmctld back in {t_up:.1f} s with its jobs (state saved); "
                   "jobs kept running under slurmstepd; the poller (sacct via slurmdbd) kept watching; no resubmit",
                   work, recovery, {"queue_after_restart": queue})


@fault("scancel_from_outside", tier="slurm")
def scancel_from_outside(env: FaultEnv) -> FaultResult:
    """root ``scancel``s one of 2 running jobs (a site administrator); recovery: until its retry's product exists."""
    site = _site(env)
    work = _Workload(site, "scancel", [Item(f"job{i}", 15) for i in range(2)])
    ids = work.running(2)
    t0 = time.time()
    site.slurm.run("scancel", ids[0])
    work.finish()
    retry = work.items[0].tries[-1]
    recovery = retry.get("ended", t0) - t0 if len(work.items[0].tries) > 1 else None
    return _result("scancel_from_outside", "2 Slurm jobs running; root scancels one",
                   "batch layer over real sshd + Slurm: sacct said \"CANCELLED by 0\"; BatchJobOperator "
                   "(fixed: a cancel by the site is retried, one by our own account is not) retried it as a new job",
                   work, recovery)


@fault("job_over_walltime", tier="slurm")
def job_over_walltime(env: FaultEnv) -> FaultResult:
    """A 95 s job under a 1-minute walltime: TIMEOUT, retried with a longer walltime; recovery: timeout to product.

    95 s, not just over 60: slurmctld enforces time limits every 30 s (then ``KillWait``), so a 75 s job could
    finish its product before the kill and still end TIMEOUT; its retry then did the work a second time
    (seen in the first run of this row).
    """
    site = _site(env)
    work = _Workload(site, "walltime", [Item("long", 95, walltime_min=1)])
    work.finish(900)
    tries = work.items[0].tries
    recovery = tries[-1]["ended"] - tries[0]["ended"] if len(tries) > 1 else None
    walls = " -> ".join(f"{t['walltime_min']} min" for t in tries)
    return _result("job_over_walltime", "a 95 s job with walltime 1 min",
                   f"batch layer over real sshd + Slurm: TIMEOUT -> BatchJobOperator retried with walltime {walls} "
                   "(fixed: int(1 x 1.5) kept 1 min, so every retry timed out)", work, recovery)
