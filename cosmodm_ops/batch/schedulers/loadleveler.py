"""IBM Tivoli Workload Scheduler LoadLeveler: ``llsubmit``, ``llq -l``, ``llq -r`` (live lookup), ``llcancel``.

The job id is the job *step* id, ``<schedd host>.<job number>.0`` (``llsubmit`` prints the job
``host.123``; our jobs have one step). Status is one ``llq -l STEP...`` (long listing, one
``===== Job Step ... =====`` block per step); the live lookup is ``llq -r %id %jn %st``
(raw output, ``!``-separated, no headers).

LoadLeveler forgets a step once it has left the queue (completed steps show up only in the
accounting history, ``llsummary``, which needs admin set-up): a step that ``llq`` no longer
knows is ``UNKNOWN``, so a watcher must poll while the job is still listed as
"Complete Pending"/"Completed" (LoadLeveler keeps it for a short while) or rely on the job's
own outputs. This is a limitation of the batch system, said here so nobody is surprised.

Job arrays (``JobSpec.array_size``) are emulated: LoadLeveler has no arrays, but one job command
file may hold many steps (one ``# @ queue`` each). Element ``i`` is step ``i`` (id ``host.N.i``,
``step_name = e<i>``, logs ``<name>.<i>.out``, ``environment = COSMODM_ARRAY_INDEX=<i>``); with
``array_max_parallel = M`` step ``i`` waits for step ``i - M`` (``dependency = (e<i-M> >= 0)``), so
at most M run at once. The array id is the job ``host.N``: ``llcancel host.N`` removes every step.

No LoadLeveler exists here: the state translation is tested on outputs written after IBM's
documentation (LoadLeveler "Using and Administering", llq command, "Examples" and the
job-step status table: https://www.ibm.com/docs/en/tivoli-workload-scheduler-loadleveler/5.1.0?topic=commands-llq).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from cosmodm_ops.batch.base import (
    CommandResult,
    CommandRunner,
    JobSpec,
    JobState,
    JobStatus,
    Scheduler,
    SubmitError,
)
from cosmodm_ops.batch.schedulers._common import check_ran, script_path, write_and_run_argv
from cosmodm_ops.batch.script import directive_value, log_dir, log_paths, memory_mb, render, walltime_hms

__all__ = ["LL_ABBREV", "LL_STATES", "LoadLevelerScheduler", "parse_llq_long", "parse_llq_raw"]

#: Long status names of ``llq -l`` -> JobState.
LL_STATES: dict[str, JobState] = {
    "idle": JobState.PENDING,
    "pending": JobState.PENDING,
    "starting": JobState.PENDING,
    "deferred": JobState.PENDING,
    "not queued": JobState.PENDING,
    "user hold": JobState.PENDING,
    "system hold": JobState.PENDING,
    "user & system hold": JobState.PENDING,
    "hold": JobState.PENDING,
    "vacated": JobState.PENDING,  # put back in the queue: will run again
    "vacate pending": JobState.PENDING,
    "resume pending": JobState.PENDING,
    "running": JobState.RUNNING,
    "checkpointing": JobState.RUNNING,
    "complete pending": JobState.RUNNING,
    "preempt pending": JobState.RUNNING,
    "remove pending": JobState.RUNNING,
    "reject pending": JobState.PENDING,
    "completed": JobState.COMPLETED,  # then decided by the completion code
    "canceled": JobState.CANCELLED,
    "cancelled": JobState.CANCELLED,
    "removed": JobState.CANCELLED,
    "preempted": JobState.PREEMPTED,
    "rejected": JobState.NODE_FAIL,  # no node would start it
    "not run": JobState.FAILED,
    "submission error": JobState.FAILED,
    "terminated": JobState.FAILED,
}

#: Abbreviations of ``llq`` short/raw listings (``%st``) -> JobState.
LL_ABBREV: dict[str, JobState] = {
    "I": JobState.PENDING, "P": JobState.PENDING, "ST": JobState.PENDING, "D": JobState.PENDING,
    "NQ": JobState.PENDING, "H": JobState.PENDING, "S": JobState.PENDING, "HS": JobState.PENDING,
    "V": JobState.PENDING, "VP": JobState.PENDING, "MP": JobState.PENDING, "XP": JobState.PENDING,
    "R": JobState.RUNNING, "CK": JobState.RUNNING, "CP": JobState.RUNNING, "EP": JobState.RUNNING,
    "RP": JobState.RUNNING,
    "C": JobState.COMPLETED, "CA": JobState.CANCELLED, "RM": JobState.CANCELLED, "E": JobState.PREEMPTED,
    "X": JobState.NODE_FAIL, "NR": JobState.FAILED, "SX": JobState.FAILED, "TX": JobState.FAILED,
}

_SUBMITTED = re.compile(r'The job "([^"]+)" (?:with \d+ job steps? )?has been submitted')
_BLOCK = re.compile(r"^=+\s*Job Step\s+(\S+)\s*=+\s*$")


def parse_llq_raw(text: str) -> list[tuple[str, str, str]]:
    """(step id, job name, status abbreviation) from ``llq -r %id %jn %st``."""
    rows = []
    for line in text.splitlines():
        parts = line.strip().split("!")
        if len(parts) >= 3 and parts[0]:
            rows.append((parts[0], parts[1], parts[2]))
    return rows


def _completion(value: str) -> tuple[int | None, int]:
    """(exit code, signal) from a wait()-style completion code (``768`` = exit 3, ``9`` = signal 9)."""
    value = value.strip()
    if not value.lstrip("-").isdigit():
        return None, 0
    status = int(value)
    if status & 0x7F:
        return None, status & 0x7F
    return status >> 8, 0


def parse_llq_long(text: str, job_ids: Sequence[str]) -> dict[str, JobStatus]:
    """Statuses from ``llq -l STEP...`` ("Key: Value" lines in ``===== Job Step ID =====`` blocks)."""
    blocks: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in text.splitlines():
        m = _BLOCK.match(line.strip())
        if m:
            current = blocks.setdefault(m.group(1), {})
            continue
        if current is not None and ":" in line:
            key, _, value = line.partition(":")
            current.setdefault(key.strip().lower(), value.strip())
    out: dict[str, JobStatus] = {}
    for jid in job_ids:
        info = blocks.get(jid) or blocks.get(f"{jid}.0")
        if info is None:
            out[jid] = JobStatus(jid, JobState.UNKNOWN,
                                 reason="not listed by llq (left the queue, or unknown)")
            continue
        raw = info.get("status", "")
        state = LL_STATES.get(raw.lower(), JobState.UNKNOWN)
        exit_code = None
        reason = None
        if state is JobState.COMPLETED:
            code, sig = _completion(info.get("completion code", ""))
            if sig:
                state, exit_code, reason = JobState.FAILED, 128 + sig, f"killed by signal {sig}"
            elif code is None:
                state, reason = JobState.UNKNOWN, "completed without a completion code"
            elif code != 0:
                state, exit_code = JobState.FAILED, code
            else:
                exit_code = 0
        if raw.lower() in {"user hold", "system hold", "user & system hold", "hold"}:
            reason = raw
        nodes = info.get("allocated host") or info.get("allocated hosts") or None
        out[jid] = JobStatus(jid, state, exit_code=exit_code, nodes=nodes.split()[0] if nodes else None,
                             reason=reason, raw_state=raw or None)
    return out


class LoadLevelerScheduler(Scheduler):
    """LoadLeveler (see the module docstring)."""

    name = "loadleveler"

    def directives(self, spec: JobSpec) -> list[str]:
        """``# @`` keywords: name, shell, initialdir, logs, job type and nodes, resources, limit, class, account.

        An array gets one step per element (see the module docstring) after the common keywords.
        """
        out, err = log_paths(spec)
        d = [
            f"job_name = {spec.name}",
            "shell = /bin/bash",
            f"initialdir = {directive_value('workdir', spec.workdir)}",
        ]
        if not spec.is_array:
            d += [f"output = {directive_value('stdout', out)}", f"error = {directive_value('stderr', err)}"]
        if spec.nodes > 1:
            d += ["job_type = parallel", f"node = {int(spec.nodes)}", "tasks_per_node = 1"]
        else:
            d.append("job_type = serial")
        d.append(f"resources = ConsumableCpus({int(spec.cores)}) ConsumableMemory({memory_mb(spec.memory_gb)} mb)")
        d.append(f"wall_clock_limit = {walltime_hms(spec.walltime_min)}")
        if spec.partition:
            d.append(f"class = {directive_value('partition', spec.partition)}")
        if spec.account:
            d.append(f"account_no = {directive_value('account', spec.account)}")
        lines = [f"# @ {x}" for x in d]
        if spec.qos:
            lines.append(f"# qos={directive_value('qos', spec.qos)} ignored: LoadLeveler has no QOS")
        if spec.is_array:
            lines += self._steps(spec)
        else:
            lines.append("# @ queue")
        return lines

    @staticmethod
    def _steps(spec: JobSpec) -> list[str]:
        """One job step per array element; step ``i`` waits for step ``i - M`` under a limit of M."""
        lines = []
        limit = spec.array_max_parallel
        for i in range(int(spec.array_size or 0)):
            out, err = log_paths(spec, i)
            lines += [f"# @ step_name = e{i}", f"# @ output = {directive_value('stdout', out)}",
                      f"# @ error = {directive_value('stderr', err)}", f"# @ environment = COSMODM_ARRAY_INDEX={i}"]
            if limit and i >= limit:
                lines.append(f"# @ dependency = (e{i - limit} >= 0)")
            lines.append("# @ queue")
        return lines

    def render_script(self, spec: JobSpec) -> str:
        """The llsubmit job command file."""
        return render(spec, self.directives(spec), system="loadleveler", array_index="${COSMODM_ARRAY_INDEX:-}")

    def find_live(self, runner: CommandRunner, name: str, *, array: bool = False) -> str | None:
        """The step id of an unfinished job called ``name`` (``llq -r %id %jn %st``); ``array``: the job id."""
        res = runner.run(["llq", "-r", "%id", "%jn", "%st"])
        if res.returncode != 0 and "no job status to report" in (res.stdout + res.stderr).lower():
            return None
        check_ran(self.name, f"live-job lookup of {name}", res, submit=True)
        for step, job_name, st in parse_llq_raw(res.stdout):
            if job_name == name and not LL_ABBREV.get(st.strip().upper(), JobState.UNKNOWN).terminal:
                return step.rsplit(".", 1)[0] if array else step
        return None

    def submit(self, runner: CommandRunner, spec: JobSpec) -> str:
        """The live step of that name, or the command file written and ``llsubmit``-ed; returns ``host.N.0``."""
        live = self.find_live(runner, spec.name, array=spec.is_array)
        if live:
            return live
        argv = write_and_run_argv(log_dir(spec), script_path(spec, ".cmd"), ["llsubmit"])
        res = runner.run(argv, stdin=self.render_script(spec), timeout=120)
        check_ran(self.name, f"llsubmit of {spec.name}", res, submit=True)
        m = _SUBMITTED.search(res.stdout + res.stderr)
        if not m:
            msg = f"loadleveler: llsubmit printed no job id for {spec.name}: {res.stdout.strip()[:300]!r}"
            raise SubmitError(msg, stdout=res.stdout, stderr=res.stderr, retcode=res.returncode)
        return m.group(1) if spec.is_array else f"{m.group(1)}.0"

    def array_element_ids(self, job_id: str, n: int) -> list[str]:
        """Job ``host.N`` -> steps ``host.N.0 .. host.N.<n-1>``."""
        return [f"{job_id}.{i}" for i in range(int(n))]

    def status_argv(self, job_ids: Sequence[str]) -> list[list[str]]:
        """``llq -l STEP...``."""
        return [["llq", "-l", *job_ids]]

    def parse_status(self, outputs: Sequence[CommandResult], job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """See :func:`parse_llq_long`; "no job status to report" means every id is gone (UNKNOWN)."""
        res = outputs[0]
        if res.returncode != 0 and "no job status to report" not in (res.stdout + res.stderr).lower():
            check_ran(self.name, "llq", res)
        return parse_llq_long(res.stdout, job_ids)

    def cancel_argv(self, job_id: str) -> list[str]:
        """``llcancel STEP``."""
        return ["llcancel", str(job_id)]
