"""The narrow interfaces of the batch layer: job states, job specs, command runners, schedulers.

Schedulers (Slurm, PBS, LoadLeveler, HTCondor, local) build command lines and parse
outputs; command runners (local subprocess, SSH) carry those commands. A scheduler
never knows how its commands travel (Parsl learned that the hard way).
No Airflow import here: the Airflow layer wraps these.
"""

from __future__ import annotations

import abc
import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

__all__ = [
    "RETRYABLE_STATES",
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
    "job_name_for",
    "pool_name",
]


class JobState(str, enum.Enum):
    """One vocabulary for every batch system's job states."""

    PENDING = "pending"
    """Queued, held or being configured: not running yet."""
    RUNNING = "running"
    """Running (or completing: the script has not ended everywhere)."""
    COMPLETED = "completed"
    """Ended with exit code 0."""
    FAILED = "failed"
    """Ended with a non-zero exit code (the pipeline's code says why)."""
    CANCELLED = "cancelled"
    """Cancelled by a user, an operator or the Airflow layer (on_kill)."""
    TIMEOUT = "timeout"
    """Killed for exceeding its walltime; a retry may ask for more."""
    NODE_FAIL = "node_fail"
    """The node failed under the job; retrying elsewhere should work."""
    OUT_OF_MEMORY = "out_of_memory"
    """Killed for exceeding its memory; a retry may ask for more."""
    PREEMPTED = "preempted"
    """Preempted by a higher-priority job; retry."""
    UNKNOWN = "unknown"
    """The batch system does not (or no longer) know the job, or said something we cannot map."""

    @property
    def terminal(self) -> bool:
        """True when the job will not change state any more."""
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset(
    {JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED, JobState.TIMEOUT, JobState.NODE_FAIL,
     JobState.OUT_OF_MEMORY, JobState.PREEMPTED}
)
#: Final states where a retry (possibly with more resources) is the right answer.
RETRYABLE_STATES = frozenset({JobState.TIMEOUT, JobState.NODE_FAIL, JobState.OUT_OF_MEMORY, JobState.PREEMPTED})

_JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def pool_name(site: str) -> str:
    """The Airflow pool of a site's batch jobs: ``cosmodm_<site>`` (slots: ``batch.max_concurrent``)."""
    return f"cosmodm_{site}"


def job_name_for(dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1) -> str:
    """A batch job name from DAG, run, task, map index and try: safe for every scheduler and shell.

    Characters other than ``[A-Za-z0-9._-]`` become ``_``; long names keep a hash suffix so they stay unique.
    """
    import hashlib

    raw = f"{dag_id}.{run_id}.{task_id}" + (f".m{map_index}" if map_index >= 0 else "") + f".t{try_number}"
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", raw).lstrip("._-") or "job"
    if len(safe) > 100:
        safe = f"{safe[:80]}.{hashlib.sha256(raw.encode()).hexdigest()[:12]}"
    return safe


@dataclass(frozen=True)
class JobSpec:
    """Everything needed to submit one batch job.

    Parameters
    ----------
    name : str
        Job name (see :func:`job_name_for`); used for idempotent submission.
    command : sequence of str
        The command as an argument list; schedulers quote it with ``shlex``.
    workdir : str
        Working directory on the compute side (stdout/stderr files go there).
    nodes, cores, memory_gb, walltime_min : resources
    partition, account, qos : optional scheduler settings (partition = queue for PBS/LoadLeveler)
    env : mapping
        Environment variables exported in the script (never secrets).
    ramdisk : str, optional
        RAM-disk parent; the script creates ``<ramdisk>/<name>`` (``<ramdisk>/<name>.<index>`` for an
        array element) and removes it on exit (trap).
    array_size : int, optional
        Submit a job array of this many elements (indices ``0 .. array_size - 1``); each element runs
        ``command`` with ``COSMODM_ARRAY_INDEX`` set to its index and writes its own
        ``<workdir>/.cosmodm/<name>.<index>.out`` / ``.err``. None = one ordinary job.
    array_max_parallel : int, optional
        At most this many elements run at once (Slurm ``%M``; emulated elsewhere). Needs ``array_size``.
        RAM-disk parent; the script creates ``<ramdisk>/<name>`` and removes it on exit (trap).
    memory_ulimit : bool
        The script itself limits the command's virtual memory to ``memory_gb`` (``ulimit -v``) and exits
        71 (:data:`cosmodm_ops.batch.budget.EXIT_OUT_OF_MEMORY`) when an allocation failed: for batch
        systems that do not enforce memory (the local runner, Slurm without cgroups).
    """

    name: str
    command: Sequence[str]
    workdir: str
    nodes: int = 1
    cores: int = 1
    memory_gb: float = 2.0
    walltime_min: int = 60
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    ramdisk: str | None = None
    array_size: int | None = None
    array_max_parallel: int | None = None
    memory_ulimit: bool = False

    def __post_init__(self) -> None:
        self._check_array()
        if not _JOB_NAME.match(self.name):
            msg = f"job name {self.name!r} is not allowed: use [A-Za-z0-9._-], at most 128 characters"
            raise ValueError(msg)
        if not self.command:
            msg = "a job needs a command"
            raise ValueError(msg)
        for key in self.env:
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
                msg = f"environment variable name {key!r} is not allowed"
                raise ValueError(msg)
        if "COSMODM_ARRAY_INDEX" in self.env:
            msg = "env[COSMODM_ARRAY_INDEX] is set by the job script of an array element: remove it from env"
            raise ValueError(msg)

    def _check_array(self) -> None:
        for key in ("array_size", "array_max_parallel"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                msg = f"{key}={value!r} must be a whole number >= 1 (or None)"
                raise ValueError(msg)
        if self.array_max_parallel is not None and self.array_size is None:
            msg = "array_max_parallel needs array_size (it limits the elements of a job array)"
            raise ValueError(msg)

    @property
    def is_array(self) -> bool:
        """True for a job array (``array_size`` set)."""
        return self.array_size is not None


@dataclass(frozen=True)
class JobStatus:
    """What the batch system says about one job."""

    job_id: str
    state: JobState
    exit_code: int | None = None
    elapsed_s: float | None = None
    max_rss_mb: float | None = None
    nodes: str | None = None
    reason: str | None = None
    raw_state: str | None = None


@dataclass(frozen=True)
class CommandResult:
    """Outcome of one command."""

    returncode: int
    stdout: str
    stderr: str


class SubmitError(RuntimeError):
    """Submission failed; carries the command's outputs."""

    def __init__(self, message: str, *, stdout: str = "", stderr: str = "", retcode: int | None = None) -> None:
        super().__init__(message)
        self.stdout, self.stderr, self.retcode = stdout, stderr, retcode


class SchedulerError(RuntimeError):
    """A scheduler command (status, cancel) failed; usually transient."""


class TransportError(ConnectionError):
    """The command could not be carried (SSH down, host key refused...). Retryable unless a host key problem."""


class CommandRunner(Protocol):
    """Runs argument-list commands somewhere (here, or on a login node over SSH)."""

    def run(self, argv: Sequence[str], *, stdin: str | None = None, timeout: float | None = 60) -> CommandResult:
        """Run and wait; never raises for a non-zero exit (see ``returncode``); raises TransportError."""
        ...


class AsyncCommandRunner(Protocol):
    """The asyncio twin of :class:`CommandRunner` (used by triggers)."""

    async def run(self, argv: Sequence[str], *, stdin: str | None = None, timeout: float | None = 60) -> CommandResult:
        """Run and wait; raises TransportError when the transport fails."""
        ...


class Scheduler(abc.ABC):
    """One batch system. Pure command building and output parsing, plus calls through a runner."""

    #: Name in site configs (``site.batch.system``).
    name: str = ""

    @abc.abstractmethod
    def render_script(self, spec: JobSpec) -> str:
        """The submit script (directives, environment, RAM-disk setup with cleanup trap, command)."""

    @abc.abstractmethod
    def submit(self, runner: CommandRunner, spec: JobSpec) -> str:
        """Submit (idempotent: an existing live job of the same name is returned instead). Returns the job id."""

    @abc.abstractmethod
    def status_argv(self, job_ids: Sequence[str]) -> list[list[str]]:
        """Commands that report the states of many jobs at once (one batched call per poll)."""

    @abc.abstractmethod
    def parse_status(self, outputs: Sequence[CommandResult], job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """Translate the outputs of :meth:`status_argv` into states, one per requested id."""

    def status(self, runner: CommandRunner, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """Poll many jobs with one batched command (sync)."""
        outs = [runner.run(argv) for argv in self.status_argv(job_ids)]
        return self.parse_status(outs, job_ids)

    async def status_async(self, runner: AsyncCommandRunner, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """Poll many jobs with one batched command (async, for triggers)."""
        outs = [await runner.run(argv) for argv in self.status_argv(job_ids)]
        return self.parse_status(outs, job_ids)

    def array_element_ids(self, job_id: str, n: int) -> list[str]:
        """The ids of the ``n`` elements of array ``job_id`` (as :meth:`submit` returned it), index order.

        Each can be passed to :meth:`status` (batched with other jobs and other arrays' elements) and
        to :meth:`cancel` (that element only; the array id cancels every element).
        """
        msg = f"{self.name}: job arrays are not supported"
        raise NotImplementedError(msg)

    @abc.abstractmethod
    def cancel_argv(self, job_id: str) -> list[str]:
        """The cancel command."""

    def cancel(self, runner: CommandRunner, job_id: str) -> None:
        """Cancel a job; raises SchedulerError when the batch system refuses."""
        res = runner.run(self.cancel_argv(job_id))
        if res.returncode != 0:
            msg = f"{self.name}: cancel of job {job_id} failed (exit {res.returncode}): {res.stderr.strip()[:500]}"
            raise SchedulerError(msg)
