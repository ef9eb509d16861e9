"""Slurm: ``sbatch --parsable``, ``sacct`` (``squeue`` when accounting is off), ``scancel``.

Commands (each one call through the runner)

* live-job lookup (idempotent submit): ``squeue --me -h --name NAME -o %i|%T``; a job in a
  non-final state is returned instead of submitting again;
* submit: ``bash -c 'old=$(umask); umask 077; mkdir -p DIR && cat > FILE && umask $old && exec sbatch --parsable FILE'``
  with the script on stdin (paths as positional arguments); the script stays in
  ``<workdir>/.cosmodm/<name>.sh`` for people who debug, its stdout/stderr go to ``.out``/``.err`` there;
* status, ONE command for all ids: ``sacct -P -n -j ID1,ID2,... -o
  JobIDRaw,State,ExitCode,ElapsedRaw,MaxRSS,NodeList,Reason``. We do **not** pass ``-X``:
  without it sacct also prints the steps (``123.batch``, ``123.extern``, ``123.0``), and MaxRSS
  only exists on steps, so the job's line gives state, exit code, elapsed time and nodes and
  the largest step MaxRSS gives the memory;
* when sacct says "Slurm accounting storage is disabled" (or is missing), the scheduler
  switches for good to ``squeue --me -h -t all -O JobID,State,exit_code,TimeUsed,NodeList,Reason``
  (a job is then known only for ``MinJobAge`` seconds after it ends; later it is UNKNOWN);
* requeue check, only when sacct reports NODE_FAIL or PREEMPTED: ``squeue -h -j IDS -o %i|%T|%r``;
  a job Slurm has put back in the queue (``JobRequeue=1``) is reported in its live state;
* cancel: ``scancel ID`` (an array id cancels every element, ``ID_I`` one element).

Job arrays (``JobSpec.array_size``): ``#SBATCH --array=0-N[%M]``, logs ``<name>.%a.out``, the
script exports ``COSMODM_ARRAY_INDEX=$SLURM_ARRAY_TASK_ID``. Element ids are ``<arrayid>_<i>``;
status asks sacct for the array ids (``-j 123,130``: sacct expands the elements as ``123_0``...) and
reads the ``JobID`` column (the last one); elements still pending are listed together as
``123_[3-9%2]`` (or ``123_[3,5,7-9]``) and are expanded here.

The state table covers every state of Slurm's ``squeue``/``sacct`` documentation
(https://slurm.schedmd.com/sacct.html#SECTION_JOB-STATE-CODES). The outputs used by the unit
tests were captured from the real Slurm 22.05 on this machine (``tests/unit/data/batch/slurm_*``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from cosmodm_ops.batch.base import (
    AsyncCommandRunner,
    CommandResult,
    CommandRunner,
    JobSpec,
    JobState,
    JobStatus,
    Scheduler,
    SubmitError,
)
from cosmodm_ops.batch.schedulers._common import (
    check_ran,
    first_line,
    parse_duration,
    parse_memory_mb,
    script_path,
    write_and_run_argv,
)
from cosmodm_ops.batch.script import directive_value, log_dir, log_paths, memory_mb, render

__all__ = ["SLURM_STATES", "SlurmScheduler", "expand_array_ids", "parse_exit_code", "parse_sacct", "parse_squeue"]

#: Slurm job state -> JobState (sacct/squeue "JOB STATE CODES", long names).
SLURM_STATES: dict[str, JobState] = {
    "PENDING": JobState.PENDING,
    "CONFIGURING": JobState.PENDING,
    "REQUEUED": JobState.PENDING,
    "REQUEUE_FED": JobState.PENDING,
    "REQUEUE_HOLD": JobState.PENDING,
    "RESV_DEL_HOLD": JobState.PENDING,
    "SPECIAL_EXIT": JobState.PENDING,  # held after a special exit code: waits for a release
    "SUSPENDED": JobState.PENDING,  # not running now; resumes later
    "STOPPED": JobState.PENDING,
    "RUNNING": JobState.RUNNING,
    "COMPLETING": JobState.RUNNING,
    "SIGNALING": JobState.RUNNING,
    "STAGE_OUT": JobState.RUNNING,
    "RESIZING": JobState.RUNNING,
    "COMPLETED": JobState.COMPLETED,
    "FAILED": JobState.FAILED,
    "CANCELLED": JobState.CANCELLED,
    "TIMEOUT": JobState.TIMEOUT,
    "DEADLINE": JobState.TIMEOUT,  # ended at its --deadline: more time (or an earlier start) is the fix
    "NODE_FAIL": JobState.NODE_FAIL,
    "BOOT_FAIL": JobState.NODE_FAIL,
    "LAUNCH_FAILED": JobState.NODE_FAIL,
    "OUT_OF_MEMORY": JobState.OUT_OF_MEMORY,
    "PREEMPTED": JobState.PREEMPTED,
    "REVOKED": JobState.UNKNOWN,  # federation: the job runs on a sibling cluster
}

_SACCT_FIELDS = "JobIDRaw,State,ExitCode,ElapsedRaw,MaxRSS,NodeList,Reason,JobID"
_SQUEUE_FORMAT = "JobID:|,State:|,exit_code:|,TimeUsed:|,NodeList:|,Reason:"
_PENDING_ELEMENTS = re.compile(r"^(\d+)_\[([0-9,\-]+)(?:%\d+)?\]$")
_REQUEUEABLE = frozenset({JobState.NODE_FAIL, JobState.PREEMPTED})
_NO_ACCOUNTING = ("accounting storage is disabled", "sacct: command not found", "sacct: not found")


def _state(raw: str) -> tuple[JobState, str, str | None]:
    """(state, the bare state word, extra words such as 'by 1001')."""
    word, _, rest = raw.strip().partition(" ")
    word = word.rstrip("+").upper()
    return SLURM_STATES.get(word, JobState.UNKNOWN), word, rest.strip() or None


def parse_exit_code(text: str) -> tuple[int | None, int]:
    """``"3:0"`` -> (3, 0): the exit code and the signal (sacct's ExitCode)."""
    code, _, sig = text.strip().partition(":")
    try:
        return int(code), int(sig or 0)
    except ValueError:
        return None, 0


def _exit_from(code: int | None, signal: int) -> int | None:
    return 128 + signal if signal else code


def _none(text: str) -> str | None:
    text = text.strip()
    return None if text in {"", "None", "None assigned", "(null)"} else text


def expand_array_ids(jid: str) -> list[str]:
    """``123_[3-5,8%2]`` -> ``['123_3', '123_4', '123_5', '123_8']``; any other id -> ``[jid]``."""
    m = _PENDING_ELEMENTS.match(jid)
    if not m:
        return [jid]
    out = []
    for part in m.group(2).split(","):
        lo, _, hi = part.partition("-")
        if lo.isdigit() and (not hi or hi.isdigit()):
            out += [f"{m.group(1)}_{i}" for i in range(int(lo), int(hi or lo) + 1)]
    return out


def parse_sacct(text: str, job_ids: Sequence[str]) -> dict[str, JobStatus]:
    """Statuses from ``sacct -P -n -o JobIDRaw,State,ExitCode,ElapsedRaw,MaxRSS,NodeList,Reason[,JobID]`` (with steps).

    With the ``JobID`` column (8 fields) array elements are found as ``<arrayid>_<i>`` too, including
    pending ones listed as ``<arrayid>_[3-9%2]``; 7-field output (older captures) is read by JobIDRaw.
    """
    jobs: dict[str, list[str]] = {}
    rss: dict[str, float] = {}
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) not in (7, 8):
            continue
        names = [parts[0].strip()] + ([parts[7].strip()] if len(parts) == 8 else [])
        mem = parse_memory_mb(parts[4], bare_unit="")  # sacct prints K/M/G suffixes; bare = bytes
        for jid in names:
            base = jid.split(".", 1)[0]
            if mem is not None:
                rss[base] = max(rss.get(base, 0.0), mem)
            if "." not in jid:
                for one in expand_array_ids(jid):
                    if one == jid or one not in jobs:  # an element's own line wins over a pending range
                        jobs[one] = parts[:7]
    out: dict[str, JobStatus] = {}
    for jid in job_ids:
        parts = jobs.get(str(jid))
        if parts is None:
            out[jid] = JobStatus(jid, JobState.UNKNOWN, reason="not in sacct output (not recorded yet, or unknown)")
            continue
        state, word, extra = _state(parts[1])
        code, sig = parse_exit_code(parts[2])
        exit_code = 0 if state is JobState.COMPLETED else _exit_from(code, sig)
        if state in {JobState.PENDING, JobState.RUNNING, JobState.UNKNOWN}:
            exit_code = None
        reasons = [r for r in (_none(parts[6]), f"{word.lower()} {extra}" if extra else None,
                               f"signal {sig}" if sig and state.terminal else None) if r]
        out[jid] = JobStatus(jid, state, exit_code=exit_code, elapsed_s=parse_duration(parts[3]),
                             max_rss_mb=rss.get(str(jid)), nodes=_none(parts[5]),
                             reason="; ".join(reasons) or None, raw_state=parts[1].strip())
    return out


def parse_squeue(text: str, job_ids: Sequence[str]) -> dict[str, JobStatus]:
    """Statuses from ``squeue -h -t all -O JobID,State,exit_code,TimeUsed,NodeList,Reason`` ('|' after each).

    squeue's ``exit_code`` is the raw wait status: ``768`` = exit 3, ``15`` = killed by SIGTERM.
    """
    seen: dict[str, list[str]] = {}
    for line in text.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) >= 6:
            for one in expand_array_ids(parts[0]):
                if one == parts[0] or one not in seen:
                    seen[one] = parts
    out: dict[str, JobStatus] = {}
    for jid in job_ids:
        parts = seen.get(str(jid))
        if parts is None:
            out[jid] = JobStatus(jid, JobState.UNKNOWN,
                                 reason="not in squeue (ended more than MinJobAge ago, and accounting is off)")
            continue
        state, word, _ = _state(parts[1])
        exit_code = None
        if state.terminal and parts[2].isdigit():
            status = int(parts[2])
            exit_code = (status >> 8) if status & 0x7F == 0 else 128 + (status & 0x7F)
        if state is JobState.COMPLETED:
            exit_code = 0
        out[jid] = JobStatus(jid, state, exit_code=exit_code, elapsed_s=parse_duration(parts[3]),
                             nodes=_none(parts[4]), reason=_none(parts[5]), raw_state=word)
    return out


class SlurmScheduler(Scheduler):
    """Slurm through ``sbatch``/``sacct``/``squeue``/``scancel`` (see the module docstring).

    Parameters
    ----------
    accounting : bool, optional
        False skips sacct and uses squeue from the start; None (default) tries sacct and
        switches to squeue the first time sacct reports that accounting is off.
    """

    name = "slurm"

    def __init__(self, accounting: bool | None = None) -> None:
        self.accounting = accounting

    # -- script
    def directives(self, spec: JobSpec) -> list[str]:
        """``#SBATCH`` lines: name, (array,) logs, workdir, nodes, cores, memory, walltime, partition, account, QOS."""
        out, err = log_paths(spec, "%a" if spec.is_array else None)
        d = [f"--job-name={spec.name}"]
        if spec.is_array:
            limit = f"%{int(spec.array_max_parallel)}" if spec.array_max_parallel else ""
            d.append(f"--array=0-{int(spec.array_size) - 1}{limit}")
        d += [
            f"--output={directive_value('stdout', out)}",
            f"--error={directive_value('stderr', err)}",
            f"--chdir={directive_value('workdir', spec.workdir)}",
            f"--nodes={int(spec.nodes)}",
            "--ntasks-per-node=1",
            f"--cpus-per-task={int(spec.cores)}",
            f"--mem={memory_mb(spec.memory_gb)}M",
            f"--time={int(spec.walltime_min)}",
        ]
        for key, value in (("partition", spec.partition), ("account", spec.account), ("qos", spec.qos)):
            if value:
                d.append(f"--{key}={directive_value(key, value)}")
        return [f"#SBATCH {x}" for x in d]

    def render_script(self, spec: JobSpec) -> str:
        """The sbatch script."""
        return render(spec, self.directives(spec), system="slurm", array_index="${SLURM_ARRAY_TASK_ID:-}")

    # -- submit
    def find_live(self, runner: CommandRunner, name: str) -> str | None:
        """The id of this user's live (not final) job called ``name``, or None (an array: its array id)."""
        res = runner.run(["squeue", "--me", "-h", "--name", name, "-o", "%i|%T"])
        check_ran(self.name, f"live-job lookup of {name}", res, submit=True)
        for line in res.stdout.splitlines():
            jid, _, state = line.strip().partition("|")
            if jid and not _state(state)[0].terminal:
                return jid.split("_", 1)[0]  # 123_4 or 123_[5-9]: element of array 123
        return None

    def submit(self, runner: CommandRunner, spec: JobSpec) -> str:
        """Return the live job of that name, or write the script and ``sbatch --parsable`` it."""
        live = self.find_live(runner, spec.name)
        if live:
            return live
        script = self.render_script(spec)
        argv = write_and_run_argv(log_dir(spec), script_path(spec), ["sbatch", "--parsable"])
        res = runner.run(argv, stdin=script, timeout=120)
        check_ran(self.name, f"sbatch of {spec.name}", res, submit=True)
        job_id = first_line(res.stdout).split(";", 1)[0].strip()
        if not job_id.isdigit():
            msg = f"slurm: sbatch printed no job id for {spec.name}: {res.stdout.strip()[:300]!r}"
            raise SubmitError(msg, stdout=res.stdout, stderr=res.stderr, retcode=res.returncode)
        return job_id

    def array_element_ids(self, job_id: str, n: int) -> list[str]:
        """``<arrayid>_0 .. <arrayid>_<n-1>``."""
        return [f"{job_id}_{i}" for i in range(int(n))]

    # -- status
    def status_argv(self, job_ids: Sequence[str]) -> list[list[str]]:
        """``sacct`` for all ids at once (elements asked as their arrays), or ``squeue`` without accounting."""
        if self.accounting is False:
            return [["squeue", "--me", "-h", "-t", "all", "-O", _SQUEUE_FORMAT]]
        asked = dict.fromkeys(str(j).split("_", 1)[0] for j in job_ids)  # 123_4 -> 123 (sacct expands it)
        return [["sacct", "-P", "-n", "-j", ",".join(asked), "-o", _SACCT_FIELDS]]

    def parse_status(self, outputs: Sequence[CommandResult], job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """sacct output, or squeue output once the scheduler has switched (``accounting is False``)."""
        res = outputs[0]
        check_ran(self.name, "status", res)
        if self.accounting is False:
            return parse_squeue(res.stdout, job_ids)
        return parse_sacct(res.stdout, job_ids)

    def _accounting_off(self, res: CommandResult) -> bool:
        text = (res.stderr + res.stdout).lower()
        return res.returncode != 0 and (res.returncode == 127 or any(s in text for s in _NO_ACCOUNTING))

    def status(self, runner: CommandRunner, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """One batched command; falls back to squeue (for good) when accounting is off."""
        res = runner.run(self.status_argv(job_ids)[0])
        if self.accounting is not False and self._accounting_off(res):
            self.accounting = False
            res = runner.run(self.status_argv(job_ids)[0])
        out = self.parse_status([res], job_ids)
        argv = self.requeue_check_argv(out)
        return self.apply_requeue_check(out, runner.run(argv)) if argv else out

    async def status_async(self, runner: AsyncCommandRunner, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """The asyncio twin of :meth:`status`."""
        res = await runner.run(self.status_argv(job_ids)[0])
        if self.accounting is not False and self._accounting_off(res):
            self.accounting = False
            res = await runner.run(self.status_argv(job_ids)[0])
        out = self.parse_status([res], job_ids)
        argv = self.requeue_check_argv(out)
        return self.apply_requeue_check(out, await runner.run(argv)) if argv else out

    # -- requeue after a node failure or preemption
    def requeue_check_argv(self, statuses: dict[str, JobStatus]) -> list[str] | None:
        """``squeue -h -j IDS -o %i|%T|%r`` for the jobs sacct calls NODE_FAIL or PREEMPTED, else None.

        With ``JobRequeue=1`` (Slurm's default) such a job goes back to the queue under the same id,
        but sacct keeps showing the killed run for a while (seen on Slurm 22.05: five seconds and more);
        squeue, without ``-t``, lists only jobs that are still live.
        """
        ids = [j for j, s in statuses.items() if s.state in _REQUEUEABLE]
        return ["squeue", "-h", "-j", ",".join(ids), "-o", "%i|%T|%r"] if ids else None

    @staticmethod
    def apply_requeue_check(statuses: dict[str, JobStatus], res: CommandResult) -> dict[str, JobStatus]:
        """Replace the statuses of requeued jobs by their live state (squeue failing = no requeue known)."""
        if res.returncode != 0:  # e.g. "Invalid job id specified": the job is gone for good
            return statuses
        out = dict(statuses)
        for line in res.stdout.splitlines():
            jid, _, rest = line.strip().partition("|")
            word, _, reason = rest.partition("|")
            state = _state(word)[0]
            if jid in out and not state.terminal and state is not JobState.UNKNOWN:
                before = out[jid]
                out[jid] = JobStatus(jid, state, nodes=before.nodes, raw_state=word,
                                     reason=f"requeued after {before.raw_state or before.state.value}"
                                            + (f" ({reason})" if _none(reason) else ""))
        return out

    # -- cancel
    def cancel_argv(self, job_id: str) -> list[str]:
        """``scancel ID``."""
        return ["scancel", str(job_id)]
