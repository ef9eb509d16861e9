"""PBS Professional / OpenPBS: ``qsub``, ``qstat -x -f -F json``, ``qdel``, ``qselect -N`` (live lookup).

Resources are requested in PBS Pro's chunk syntax (``-l select=N:ncpus=C:mem=XMB``,
``-l place=scatter`` for several nodes); ``flavor="torque"`` renders Torque's
``-l nodes=N:ppn=C,mem=XMB`` instead (Torque's ``qstat`` has no JSON output, so status still
needs a PBS Pro/OpenPBS server: Torque support stops at the script).

Job arrays (``JobSpec.array_size``): ``#PBS -J 0-N[%M]`` (``%M``, the subjob limit, needs PBS Pro
2021.1 / OpenPBS 20 or later), logs ``<name>.^array_index^.out``, the script exports
``COSMODM_ARRAY_INDEX=$PBS_ARRAY_INDEX``. qsub prints ``123[].server``; element (subjob) ids are
``123[4].server``; status asks ``qstat -x -f -F json -t`` for the arrays, which lists every subjob
(finished ones in state ``X`` with their ``Exit_status``). Torque (``flavor="torque"``) renders
``-t 0-N%M`` and ``$PBS_ARRAYID`` (status needs PBS Pro, as for single jobs).

No PBS server exists in Debian 12: the state translation is tested on outputs written after the
formats documented in the PBS Professional Reference Guide (qstat, "Job States" and "Job Exit
Status" tables: https://help.altair.com/2022.1.0/PBS%20Professional/PBSReferenceGuide2022.1.pdf)
and OpenPBS's ``qstat(1B)`` man page (https://github.com/openpbs/openpbs/blob/master/doc/man1/qstat.1B).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from cosmodm_ops.batch.base import (
    CommandResult,
    CommandRunner,
    JobSpec,
    JobState,
    JobStatus,
    Scheduler,
    SchedulerError,
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
from cosmodm_ops.batch.script import directive_value, log_dir, log_paths, memory_mb, render, walltime_hms

_ARRAY_INDEX = re.compile(r"\[\d+\]")

__all__ = ["PBS_EXIT_STATES", "PBS_STATES", "PBSScheduler", "parse_qstat_json"]

#: PBS job_state letter -> JobState (``F``/``X``/``C`` are decided by the exit status).
PBS_STATES: dict[str, JobState] = {
    "Q": JobState.PENDING,  # queued
    "H": JobState.PENDING,  # held
    "W": JobState.PENDING,  # waiting for its execution time / stage-in
    "T": JobState.PENDING,  # in transit to another server
    "S": JobState.PENDING,  # suspended by the server
    "U": JobState.PENDING,  # suspended: workstation busy
    "R": JobState.RUNNING,
    "E": JobState.RUNNING,  # exiting after having run
    "B": JobState.RUNNING,  # array job: at least one subjob started
    "M": JobState.UNKNOWN,  # moved to another server
    "F": JobState.COMPLETED,  # finished (qstat -x): see the exit status
    "X": JobState.COMPLETED,  # finished subjob: see the exit status
    "C": JobState.COMPLETED,  # Torque: completed: see the exit status
}

#: Negative PBS exit statuses (JOB_EXEC_*) -> JobState; others below 0 are node/launch failures.
PBS_EXIT_STATES: dict[int, JobState] = {
    -24: JobState.FAILED,  # JOB_EXEC_KILL_NCPUS_BURST
    -25: JobState.FAILED,  # JOB_EXEC_KILL_NCPUS_SUM
    -26: JobState.OUT_OF_MEMORY,  # JOB_EXEC_KILL_VMEM
    -27: JobState.OUT_OF_MEMORY,  # JOB_EXEC_KILL_MEM
    -28: JobState.TIMEOUT,  # JOB_EXEC_KILL_CPUT
    -29: JobState.TIMEOUT,  # JOB_EXEC_KILL_WALLTIME
}


def _final_state(exit_status: int | None, comment: str, used_wall: float | None,
                 asked_wall: float | None) -> tuple[JobState, int | None, str | None]:
    """(state, exit code, reason) of a finished job from its Exit_status and comment."""
    low = comment.lower()
    if "delet" in low and (exit_status is None or exit_status != 0):
        return JobState.CANCELLED, exit_status, comment or None
    if exit_status is None:
        return JobState.UNKNOWN, None, comment or "finished without an exit status"
    if exit_status < 0:
        state = PBS_EXIT_STATES.get(exit_status, JobState.NODE_FAIL)
        return state, exit_status, f"PBS exit status {exit_status}" + (f": {comment}" if comment else "")
    if exit_status == 0:
        return JobState.COMPLETED, 0, None
    if exit_status > 256:  # killed by signal exit_status - 256
        if "walltime" in low or (used_wall is not None and asked_wall and used_wall >= asked_wall):
            return JobState.TIMEOUT, exit_status, comment or "walltime exceeded"
        if "mem" in low and "exceed" in low:
            return JobState.OUT_OF_MEMORY, exit_status, comment
        return JobState.FAILED, 128 + (exit_status - 256), f"killed by signal {exit_status - 256}"
    return JobState.FAILED, exit_status, comment or None


def _nodes(exec_host: str | None) -> str | None:
    if not exec_host:
        return None
    hosts = []
    for chunk in exec_host.split("+"):
        host = chunk.split("/", 1)[0]
        if host and host not in hosts:
            hosts.append(host)
    return ",".join(hosts) or None


def _job_status(jid: str, job: dict[str, Any]) -> JobStatus:
    letter = str(job.get("job_state", "")).strip().upper()
    state = PBS_STATES.get(letter, JobState.UNKNOWN)
    used = job.get("resources_used") or {}
    asked = job.get("Resource_List") or {}
    elapsed = parse_duration(str(used.get("walltime", "")) or None)
    rss = parse_memory_mb(str(used.get("mem", "")) or None, bare_unit="")
    comment = str(job.get("comment", "") or "")
    exit_code: int | None = None
    reason: str | None = comment or None
    if state is JobState.COMPLETED:
        raw = job.get("Exit_status", job.get("exit_status"))
        try:
            code = int(raw) if raw is not None else None
        except (TypeError, ValueError):
            code = None
        state, exit_code, reason = _final_state(code, comment, elapsed,
                                                parse_duration(str(asked.get("walltime", "")) or None))
    return JobStatus(jid, state, exit_code=exit_code, elapsed_s=elapsed, max_rss_mb=rss,
                     nodes=_nodes(job.get("exec_host")), reason=reason, raw_state=letter or None)


def parse_qstat_json(text: str, job_ids: Sequence[str]) -> dict[str, JobStatus]:
    """Statuses from ``qstat -x -f -F json ID...`` (``{"Jobs": {"123.server": {...}}}``).

    Ids are matched exactly, then by their number before the first dot (``123`` = ``123.server``).
    """
    jobs: dict[str, Any] = {}
    if text.strip():
        try:
            jobs = json.loads(text).get("Jobs") or {}
        except (json.JSONDecodeError, AttributeError) as err:
            msg = f"pbs: qstat printed invalid JSON ({err}): {text[:200]!r}"
            raise SchedulerError(msg) from err
    by_number = {k.split(".", 1)[0]: k for k in jobs}
    out: dict[str, JobStatus] = {}
    for jid in job_ids:
        key = jid if jid in jobs else by_number.get(str(jid).split(".", 1)[0])
        if key is None:
            out[jid] = JobStatus(jid, JobState.UNKNOWN, reason="not known to qstat -x (too old, or wrong server)")
        else:
            out[jid] = _job_status(jid, jobs[key])
    return out


class PBSScheduler(Scheduler):
    """PBS Professional / OpenPBS (see the module docstring).

    Parameters
    ----------
    flavor : {"pro", "torque"}
        Resource syntax of the script.
    """

    name = "pbs"

    def __init__(self, flavor: str = "pro") -> None:
        if flavor not in {"pro", "torque"}:
            msg = f"pbs flavor {flavor!r}: use 'pro' (PBS Professional/OpenPBS) or 'torque'"
            raise ValueError(msg)
        self.flavor = flavor

    def directives(self, spec: JobSpec) -> list[str]:
        """``#PBS`` lines: name, (array,) logs, resources, walltime, queue, account (PBS has no QOS: noted, ignored)."""
        out, err = (directive_value(k, v) for k, v in zip(("stdout", "stderr"), log_paths(spec), strict=True))
        mem = memory_mb(spec.memory_gb)
        d = [f"-N {spec.name}"]
        if spec.is_array:
            limit = f"%{int(spec.array_max_parallel)}" if spec.array_max_parallel else ""
            d.append(f"{'-J' if self.flavor == 'pro' else '-t'} 0-{int(spec.array_size) - 1}{limit}")
            if self.flavor == "pro":  # PBS Pro replaces ^array_index^ by the subjob's index
                out, err = (f"{p[:-4]}.^array_index^{p[-4:]}" for p in (out, err))
        d += [f"-o {out}", f"-e {err}"]
        if self.flavor == "pro":
            d.append(f"-l select={int(spec.nodes)}:ncpus={int(spec.cores)}:mem={mem}mb")
            if spec.nodes > 1:
                d.append("-l place=scatter")
        else:
            d.append(f"-l nodes={int(spec.nodes)}:ppn={int(spec.cores)},mem={mem}mb")
        d.append(f"-l walltime={walltime_hms(spec.walltime_min)}")
        if spec.partition:
            d.append(f"-q {directive_value('partition', spec.partition)}")
        if spec.account:
            d.append(f"-A {directive_value('account', spec.account)}")
        lines = [f"#PBS {x}" for x in d]
        if spec.qos:
            lines.append(f"# qos={directive_value('qos', spec.qos)} ignored: PBS has no QOS")
        return lines

    def render_script(self, spec: JobSpec) -> str:
        """The qsub script."""
        index = "${PBS_ARRAY_INDEX:-}" if self.flavor == "pro" else "${PBS_ARRAYID:-}"
        return render(spec, self.directives(spec), system=f"pbs {self.flavor}", array_index=index)

    def find_live(self, runner: CommandRunner, name: str) -> str | None:
        """The first unfinished job called ``name`` (``qselect`` lists no finished job without -x)."""
        res = runner.run(["qselect", "-N", name])
        check_ran(self.name, f"live-job lookup of {name}", res, submit=True)
        ids = [line.strip() for line in res.stdout.splitlines() if line.strip()]
        if not ids:
            return None
        statuses = self.status(runner, ids)  # Torque's qselect may list completed jobs
        live = [j for j in ids if not statuses[j].state.terminal]
        return live[0] if live else None

    def submit(self, runner: CommandRunner, spec: JobSpec) -> str:
        """The live job of that name, or the script written and ``qsub``-ed; returns ``123.server`` (``123[].server``)."""
        live = self.find_live(runner, spec.name)
        if live:
            return live
        argv = write_and_run_argv(log_dir(spec), script_path(spec), ["qsub"])
        res = runner.run(argv, stdin=self.render_script(spec), timeout=120)
        check_ran(self.name, f"qsub of {spec.name}", res, submit=True)
        job_id = first_line(res.stdout)
        number = job_id.split(".", 1)[0]
        if not number.removesuffix("[]" if spec.is_array else "").isdigit():
            msg = f"pbs: qsub printed no job id for {spec.name}: {res.stdout.strip()[:300]!r}"
            raise SubmitError(msg, stdout=res.stdout, stderr=res.stderr, retcode=res.returncode)
        return job_id

    def array_element_ids(self, job_id: str, n: int) -> list[str]:
        """``123[].server`` -> ``123[0].server .. 123[n-1].server`` (PBS subjob ids)."""
        if "[]" not in job_id:
            msg = f"pbs: {job_id!r} is not an array job id (123[].server)"
            raise ValueError(msg)
        return [job_id.replace("[]", f"[{i}]", 1) for i in range(int(n))]

    def status_argv(self, job_ids: Sequence[str]) -> list[list[str]]:
        """``qstat -x -f -F json ID...`` (finished jobs included); subjobs as their arrays with ``-t``."""
        asked = dict.fromkeys(_ARRAY_INDEX.sub("[]", str(j)) for j in job_ids)
        if any("[]" in j for j in asked):
            return [["qstat", "-x", "-f", "-F", "json", "-t", *asked]]
        return [["qstat", "-x", "-f", "-F", "json", *asked]]

    def parse_status(self, outputs: Sequence[CommandResult], job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """JSON of the known jobs; qstat exits non-zero when some id is unknown, which is not an error here."""
        res = outputs[0]
        if res.returncode != 0 and "{" not in res.stdout and "unknown job id" not in res.stderr.lower():
            check_ran(self.name, "qstat", res)
        return parse_qstat_json(res.stdout, job_ids)

    def cancel_argv(self, job_id: str) -> list[str]:
        """``qdel ID``."""
        return ["qdel", str(job_id)]
