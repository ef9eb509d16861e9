"""Resource budgets per pipeline stage, and telling a memory kill from other failures.

Pure functions (no Airflow): the Airflow layer asks :func:`resources_for_try` what a try of a
stage's job gets, and :func:`memory_verdict` whether a failed job ran out of memory.

How a memory kill is recognised (``memory_verdict``), in order:

1. the batch system says so: Slurm with cgroups ``OUT_OF_MEMORY``, PBS/HTCondor translated the same way;
2. the job script enforced the limit itself (``site.batch.memory_limit: ulimit``: ``ulimit -v`` of the
   job's memory) and found an allocation failure (``MemoryError``, ``std::bad_alloc``, "Cannot allocate
   memory", "out of memory") in the job's stderr: it exits :data:`EXIT_OUT_OF_MEMORY` (71);
3. the job was killed by SIGKILL (exit 137; Slurm without cgroups reports the kernel's OOM kill as
   ``FAILED 0:9``) with a MaxRSS of at least :data:`OOM_RSS_FRACTION` of its memory.

A SIGKILL far below the limit (``scancel -s KILL``, an admin) is *not* called a memory kill.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["EXIT_OUT_OF_MEMORY", "OOM_RSS_FRACTION", "Resources", "memory_verdict", "resources_for_try"]

#: Exit code of a job script that hit its own ``ulimit -v`` (sysexits' EX_OSERR: an OS resource ran out).
EXIT_OUT_OF_MEMORY = 71
#: A SIGKILLed job whose MaxRSS reached this fraction of its memory is taken to be a memory kill.
OOM_RSS_FRACTION = 0.9
_SIGKILL_EXIT = 128 + 9
_DEFAULT_MAX_FACTOR = 4.0


@dataclass(frozen=True)
class Resources:
    """What one try of a stage's job asks for.

    Attributes
    ----------
    cores : int
    memory_gb : float
        GB, after the retry factor and the cap.
    walltime_min : int
        Minutes, after the walltime retry scale.
    max_memory_gb : float
        The cap; ``memory_gb == max_memory_gb`` means another memory retry gains nothing.
    next_memory_gb : float
        What the next try would get (equal to ``memory_gb`` when the config allows no more).
    """

    cores: int
    memory_gb: float
    walltime_min: int
    max_memory_gb: float
    next_memory_gb: float


def resources_for_try(batch: Any, stage: str | None, try_number: int, *, cores: int | None = None,
                      memory_gb: float | None = None, walltime_min: int | None = None,
                      walltime_scale: float = 1.5) -> Resources:
    """The resources of try ``try_number`` (1 = first) of a ``stage`` job under a site's ``batch`` config.

    Parameters
    ----------
    batch : cosmodm_ops.config.schema.BatchConfig
        The site's batch section; ``batch.stages[stage]`` (when present) overrides its defaults.
    stage : str, optional
        Stage name (``single_epoch``, ``coadd``, ``calibrate``); None: the site defaults only.
    try_number : int
        Airflow's try number (1 for the first try).
    cores, memory_gb, walltime_min : optional
        The operator's explicit values; they win over the stage and site values.
    walltime_scale : float
        Walltime grows by this factor per retry (timeouts).

    Returns
    -------
    Resources
        Memory ``base x retry_memory_factor ** (try - 1)`` capped at ``max_memory_gb`` (default 4 x base).
    """
    budget = batch.stages.get(stage) if stage else None
    factor = budget.retry_memory_factor if budget else 1.5
    base_mem = memory_gb or (budget.memory_gb if budget and budget.memory_gb else None) or batch.memory_gb
    cap = (budget.max_memory_gb if budget and budget.max_memory_gb else None) or base_mem * _DEFAULT_MAX_FACTOR
    cap = max(cap, base_mem)
    n = max(0, try_number - 1)

    def mem(k: int) -> float:
        return round(min(cap, base_mem * factor ** k), 2)

    base_wall = walltime_min or (budget.walltime_min if budget and budget.walltime_min else None) or batch.walltime_min
    wall = int(base_wall * walltime_scale ** n)
    if n and walltime_scale > 1:  # a short walltime still grows (int(1 x 1.5) would stay 1 minute: timeout again)
        wall = max(wall, int(base_wall) + n)
    return Resources(
        cores=cores or (budget.cores if budget and budget.cores else None) or batch.cores,
        memory_gb=mem(n), walltime_min=wall, max_memory_gb=round(cap, 2),
        next_memory_gb=mem(n + 1),
    )


def memory_verdict(state: str | None, exit_code: int | None, max_rss_mb: float | None,
                   memory_gb: float) -> str | None:
    """Why a finished job is taken to have run out of memory, or None (see the module docstring).

    Parameters
    ----------
    state : str
        The :class:`~cosmodm_ops.batch.base.JobState` value (``"out_of_memory"``, ``"failed"``, ...).
    exit_code : int, optional
        The job's exit code (128 + signal for a signal).
    max_rss_mb : float, optional
        Peak resident memory in MiB as the batch system measured it.
    memory_gb : float
        The memory the job asked for, GB.
    """
    limit_mb = memory_gb * 1024.0
    rss = f"MaxRSS {max_rss_mb:.0f} MiB" if max_rss_mb is not None else "MaxRSS unknown"
    if state == "out_of_memory":
        return f"the batch system reports OUT_OF_MEMORY ({rss} of {limit_mb:.0f} MiB)"
    if state != "failed":
        return None
    if exit_code == EXIT_OUT_OF_MEMORY:
        return f"an allocation failed under the job's own limit (ulimit -v {limit_mb:.0f} MiB; {rss})"
    if exit_code == _SIGKILL_EXIT and max_rss_mb is not None and max_rss_mb >= OOM_RSS_FRACTION * limit_mb:
        return (f"killed by SIGKILL at {rss}, >= {OOM_RSS_FRACTION:.0%} of its {limit_mb:.0f} MiB "
                "(Slurm without cgroups reports a memory kill as FAILED 0:9)")
    return None
