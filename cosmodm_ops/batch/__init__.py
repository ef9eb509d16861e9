"""Batch systems: schedulers (local, Slurm, PBS, LoadLeveler, HTCondor) over command runners (local, SSH).

Schedulers build argument-list commands and parse their outputs; runners carry the commands
(:mod:`cosmodm_ops.batch.runners` here, ``cosmodm_ops.batch.ssh`` over SSH). No Airflow import.
"""

from __future__ import annotations

import importlib

from cosmodm_ops.batch.base import (
    RETRYABLE_STATES,
    TERMINAL_STATES,
    AsyncCommandRunner,
    CommandResult,
    CommandRunner,
    JobSpec,
    JobState,
    JobStatus,
    Scheduler,
    SchedulerError,
    SubmitError,
    TransportError,
    job_name_for,
)

__all__ = [
    "RETRYABLE_STATES",
    "SCHEDULERS",
    "TERMINAL_STATES",
    "AsyncCommandRunner",
    "CommandResult",
    "CommandRunner",
    "JobSpec",
    "JobState",
    "JobStatus",
    "Scheduler",
    "SchedulerError",
    "SubmitError",
    "TransportError",
    "get_scheduler",
    "job_name_for",
]

#: Batch system name (``site.batch.system``) -> "module:class".
SCHEDULERS: dict[str, str] = {
    "local": "cosmodm_ops.batch.schedulers.local:LocalScheduler",
    "slurm": "cosmodm_ops.batch.schedulers.slurm:SlurmScheduler",
    "pbs": "cosmodm_ops.batch.schedulers.pbs:PBSScheduler",
    "loadleveler": "cosmodm_ops.batch.schedulers.loadleveler:LoadLevelerScheduler",
    "htcondor": "cosmodm_ops.batch.schedulers.htcondor:HTCondorScheduler",
}


def get_scheduler(name: str, **kwargs: object) -> Scheduler:
    """A new scheduler for a batch system name.

    Parameters
    ----------
    name : str
        One of :data:`SCHEDULERS` (``local``, ``slurm``, ``pbs``, ``loadleveler``, ``htcondor``).
    **kwargs
        Passed to the scheduler's constructor (e.g. ``walltime_s`` for ``local``).

    Raises
    ------
    ValueError
        Unknown name; the message lists the known ones.
    """
    target = SCHEDULERS.get(str(name).strip().lower())
    if target is None:
        msg = f"unknown batch system {name!r}: known are {', '.join(sorted(SCHEDULERS))}"
        raise ValueError(msg)
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)(**kwargs)
