"""HTCondor: ``condor_submit`` (a submit description around the common bash script), ``condor_q -json`` +
``condor_history -json`` (one ``bash -c`` for both), ``condor_rm``.

The submit description (:meth:`HTCondorScheduler.render_script`) runs the common script
(``<workdir>/.cosmodm/<name>.sh``, rendered by :func:`cosmodm_ops.batch.script.render`) in the
vanilla universe on a shared filesystem, tags the job with ``+CosmodmJobName`` (live lookup),
and enforces the walltime with ``periodic_remove`` (a removed job whose RemoveReason names
``PeriodicRemove`` is a TIMEOUT; one removed by ``condor_rm`` is CANCELLED). A job held for
exceeding its memory (HoldReasonCode 34) is OUT_OF_MEMORY; other holds are PENDING with the
hold reason. Job ids are ``cluster.proc`` (``123.0``).

Job arrays (``JobSpec.array_size``): ``queue N`` with ``arguments = $(Process)`` (the script exports
``COSMODM_ARRAY_INDEX=$1``), logs ``<name>.$(Process).out``, ``max_materialize = M`` for the limit
(late materialization). The array id is the cluster (``123``); elements are ``123.0 .. 123.N-1``; the
status constraint asks each cluster's range of procs at once, not one term per element.

No HTCondor daemons exist in Debian 12: the translation is tested on outputs written after the
HTCondor manual ("Job ClassAd Attributes": JobStatus 1-7, ExitCode, ExitBySignal, ExitSignal,
HoldReason, HoldReasonCode, RemoveReason; condor_q/condor_history ``-json``:
https://htcondor.readthedocs.io/en/latest/classad-attributes/job-classad-attributes.html and
https://htcondor.readthedocs.io/en/latest/man-pages/condor_q.html).
"""

from __future__ import annotations

import json
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
from cosmodm_ops.batch.schedulers._common import check_ran, first_line, script_path, write_and_run_argv
from cosmodm_ops.batch.script import directive_value, log_dir, log_paths, memory_mb, render

__all__ = ["CONDOR_STATES", "HTCondorScheduler", "parse_condor_json"]

#: JobStatus code -> JobState (3 and 4 and 5 are refined by the exit/remove/hold attributes).
CONDOR_STATES: dict[int, JobState] = {
    1: JobState.PENDING,  # Idle
    2: JobState.RUNNING,  # Running
    3: JobState.CANCELLED,  # Removed
    4: JobState.COMPLETED,  # Completed
    5: JobState.PENDING,  # Held
    6: JobState.RUNNING,  # Transferring Output
    7: JobState.PENDING,  # Suspended
}
_HOLD_MEMORY = 34  # HoldReasonCode: memory usage exceeded request_memory

_ATTRS = ("ClusterId,ProcId,JobStatus,ExitCode,ExitBySignal,ExitSignal,HoldReason,HoldReasonCode,"
          "RemoveReason,RemoteWallClockTime,MemoryUsage,ResidentSetSize,RemoteHost,LastRemoteHost,CosmodmJobName")
_MARK = "@@cosmodm-condor-history@@"
# condor_q then condor_history for the same constraint, separated by a marker line.
_STATUS = (f'condor_q -json -attributes "$1" -constraint "$2"; q=$?; echo {_MARK}; '
           'condor_history -json -attributes "$1" -constraint "$2" -limit "$3"; h=$?; '
           '[ "$q" -eq 0 ] && [ "$h" -eq 0 ]')


def _records(text: str) -> list[dict[str, Any]]:
    text = text.strip()
    if not text:
        return []
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        msg = f"htcondor: invalid JSON from condor_q/condor_history ({err}): {text[:200]!r}"
        raise SchedulerError(msg) from err
    return data if isinstance(data, list) else [data]


def _status(jid: str, ad: dict[str, Any]) -> JobStatus:
    code = int(ad.get("JobStatus", 0) or 0)
    state = CONDOR_STATES.get(code, JobState.UNKNOWN)
    exit_code = None
    reason = None
    if code == 4:
        if ad.get("ExitBySignal"):
            sig = int(ad.get("ExitSignal") or 0)
            state, exit_code, reason = JobState.FAILED, 128 + sig, f"killed by signal {sig}"
        else:
            exit_code = int(ad.get("ExitCode", 1) if ad.get("ExitCode") is not None else 1)
            state = JobState.COMPLETED if exit_code == 0 else JobState.FAILED
    elif code == 3:
        reason = str(ad.get("RemoveReason") or "") or None
        if reason and "periodicremove" in reason.replace(" ", "").lower():
            state = JobState.TIMEOUT
    elif code == 5:
        reason = str(ad.get("HoldReason") or "") or None
        if int(ad.get("HoldReasonCode") or 0) == _HOLD_MEMORY:
            state = JobState.OUT_OF_MEMORY
    rss = None
    if ad.get("MemoryUsage") is not None:
        rss = float(ad["MemoryUsage"])
    elif ad.get("ResidentSetSize") is not None:
        rss = float(ad["ResidentSetSize"]) / 1024.0  # KiB
    host = ad.get("RemoteHost") or ad.get("LastRemoteHost")
    wall = ad.get("RemoteWallClockTime")
    return JobStatus(jid, state, exit_code=exit_code, elapsed_s=float(wall) if wall is not None else None,
                     max_rss_mb=rss, nodes=str(host).split("@")[-1] if host else None, reason=reason,
                     raw_state=str(code))


def parse_condor_json(queue_text: str, history_text: str, job_ids: Sequence[str]) -> dict[str, JobStatus]:
    """Statuses from ``condor_q -json`` and ``condor_history -json`` (the queue wins when both list a job)."""
    ads: dict[str, dict[str, Any]] = {}
    for ad in _records(history_text) + _records(queue_text):
        ads[f"{ad.get('ClusterId')}.{ad.get('ProcId', 0)}"] = ad
    out: dict[str, JobStatus] = {}
    for jid in job_ids:
        key = jid if "." in jid else f"{jid}.0"
        ad = ads.get(key)
        out[jid] = _status(jid, ad) if ad else JobStatus(
            jid, JobState.UNKNOWN, reason="in neither condor_q nor condor_history")
    return out


def _per_element(spec: JobSpec, path: str) -> str:
    """``<name>.out`` -> ``<name>.$(Process).out`` for an array."""
    return f"{path[:-4]}.$(Process){path[-4:]}" if spec.is_array else path


def _constraint(job_ids: Sequence[str]) -> tuple[str, int]:
    """(ClassAd constraint for the ids, number of ads it can match): one proc range per cluster."""
    procs: dict[int, list[int]] = {}
    for jid in job_ids:
        cluster, _, proc = str(jid).partition(".")
        if not cluster.isdigit() or (proc and not proc.isdigit()):
            msg = f"htcondor job id {jid!r} is not cluster.proc"
            raise ValueError(msg)
        procs.setdefault(int(cluster), []).append(int(proc or 0))
    parts, count = [], 0
    for cluster, ps in procs.items():
        lo, hi = min(ps), max(ps)
        if lo == hi:
            parts.append(f"(ClusterId == {cluster} && ProcId == {lo})")
        else:
            parts.append(f"(ClusterId == {cluster} && ProcId >= {lo} && ProcId <= {hi})")
        count += hi - lo + 1
    return " || ".join(parts) or "false", count


class HTCondorScheduler(Scheduler):
    """HTCondor (see the module docstring)."""

    name = "htcondor"

    def render_job_script(self, spec: JobSpec) -> str:
        """The bash script the submit description runs (the common body, no directives; arrays: index in $1)."""
        return render(spec, system="htcondor", array_index="${1:-}")

    def render_script(self, spec: JobSpec) -> str:
        """The submit description (``.sub``)."""
        if spec.nodes > 1:
            msg = f"htcondor: nodes={spec.nodes}: multi-node jobs need the parallel universe, not supported"
            raise ValueError(msg)
        out, err = (directive_value(k, v) for k, v in zip(("stdout", "stderr"), log_paths(spec), strict=True))
        kind = "job array" if spec.is_array else "job"
        size = f" of {spec.array_size} elements" if spec.is_array else ""
        lines = [
            f"# CosmoDM-Ops batch {kind} {spec.name}{size} (htcondor): rendered by cosmodm_ops.batch; resubmit rather than edit",
            "universe = vanilla",
            f"executable = {directive_value('script', script_path(spec))}",
            "transfer_executable = false",
            "should_transfer_files = NO",
            f"initialdir = {directive_value('workdir', spec.workdir)}",
            *(["arguments = $(Process)"] if spec.is_array else []),
            f"output = {_per_element(spec, out)}",
            f"error = {_per_element(spec, err)}",
            f"log = {directive_value('log', script_path(spec, '.log'))}",
            f"batch_name = {spec.name}",
            f'+CosmodmJobName = "{spec.name}"',
            f"request_cpus = {int(spec.cores)}",
            f"request_memory = {memory_mb(spec.memory_gb)}",
            f"+CosmodmWalltime = {int(spec.walltime_min) * 60}",
            "periodic_remove = (JobStatus == 2) && ((time() - EnteredCurrentStatus) > CosmodmWalltime)",
            "getenv = false",
        ]
        if spec.account:
            lines.append(f"accounting_group = {directive_value('account', spec.account)}")
        for key, value in (("partition", spec.partition), ("qos", spec.qos)):
            if value:
                lines.append(f"# {key}={directive_value(key, value)} ignored: HTCondor has no {key}")
        if spec.array_max_parallel:
            lines.append(f"max_materialize = {int(spec.array_max_parallel)}")
        lines.append(f"queue {int(spec.array_size or 1)}")
        return "\n".join(lines) + "\n"

    def find_live(self, runner: CommandRunner, name: str, *, array: bool = False) -> str | None:
        """``cluster.proc`` of a queued, running or held job tagged with this name (``array``: its cluster)."""
        res = runner.run(["condor_q", "-json", "-attributes", "ClusterId,ProcId,JobStatus",
                          "-constraint", f'CosmodmJobName == "{name}"'])
        check_ran(self.name, f"live-job lookup of {name}", res, submit=True)
        for ad in _records(res.stdout):
            if int(ad.get("JobStatus", 0) or 0) not in {3, 4}:
                return str(ad.get("ClusterId")) if array else f"{ad.get('ClusterId')}.{ad.get('ProcId', 0)}"
        return None

    def submit(self, runner: CommandRunner, spec: JobSpec) -> str:
        """The live job of that name, or the script and the description written and ``condor_submit -terse``-ed."""
        live = self.find_live(runner, spec.name, array=spec.is_array)
        if live:
            return live
        sub = self.render_script(spec)
        res = runner.run(write_and_run_argv(log_dir(spec), script_path(spec), ["chmod", "700"]),
                         stdin=self.render_job_script(spec), timeout=120)
        check_ran(self.name, f"writing the script of {spec.name}", res, submit=True)
        res = runner.run(write_and_run_argv(log_dir(spec), script_path(spec, ".sub"), ["condor_submit", "-terse"]),
                         stdin=sub, timeout=120)
        check_ran(self.name, f"condor_submit of {spec.name}", res, submit=True)
        job_id = first_line(res.stdout).split(" ", 1)[0].strip()
        cluster, _, proc = job_id.partition(".")
        if not cluster.isdigit():
            msg = f"htcondor: condor_submit printed no job id for {spec.name}: {res.stdout.strip()[:300]!r}"
            raise SubmitError(msg, stdout=res.stdout, stderr=res.stderr, retcode=res.returncode)
        return cluster if spec.is_array else f"{cluster}.{proc or 0}"

    def array_element_ids(self, job_id: str, n: int) -> list[str]:
        """Cluster ``123`` -> ``123.0 .. 123.<n-1>``."""
        return [f"{str(job_id).partition('.')[0]}.{i}" for i in range(int(n))]

    def status_argv(self, job_ids: Sequence[str]) -> list[list[str]]:
        """ONE ``bash -c`` running condor_q then condor_history for all ids (one constraint)."""
        constraint, count = _constraint(job_ids)
        return [["bash", "-c", _STATUS, "cosmodm-condor-status", _ATTRS, constraint, str(count)]]

    def parse_status(self, outputs: Sequence[CommandResult], job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """Split at the marker line, parse both JSON lists."""
        res = outputs[0]
        check_ran(self.name, "condor_q/condor_history", res)
        queue, _, history = res.stdout.partition(_MARK)
        return parse_condor_json(queue, history, job_ids)

    def cancel_argv(self, job_id: str) -> list[str]:
        """``condor_rm cluster.proc``."""
        return ["condor_rm", str(job_id)]
