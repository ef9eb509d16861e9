"""The local scheduler: each job is a detached process on the machine the runner reaches.

The embedded default (``make demo``). A job survives the process that submitted it, and its
state can be read from any other process (the triggerer) and after a restart, because
everything lives in files:

``<workdir>/.cosmodm/<name>.sh``
    the job script (:func:`cosmodm_ops.batch.script.render`), run as ``bash <name>.sh``
``<name>.run``
    the supervisor: starts the script in its own session (process group), enforces the
    walltime (SIGTERM to the group, SIGKILL 10 s later; marker ``<name>.timeout``), writes
    ``<name>.end`` and then the exit code to ``<name>.rc`` (atomically)
``<name>.pid``
    ``<supervisor pid> <job pgid> <boot id> <supervisor start time in ticks>``: a pid is only
    believed alive on the same boot with the same start time (pids are reused)
``<name>.out``, ``<name>.err``, ``<name>.start``, ``<name>.cancelled``
    logs, start time, cancel marker

The **job id is the job name**. A registry folder (``$COSMODM_LOCAL_JOBS``, default
``~/.cosmodm/jobs``, resolved where the command runs) holds a symlink ``<name> ->
<workdir>/.cosmodm``, so status and cancel need only the id. Submission holds a
``flock`` on ``<registry>/.<name>.lock`` and returns the running job of that name if there is
one (idempotent). A job whose supervisor vanished without an exit code (machine rebooted,
``kill -9``) is reported as ``NODE_FAIL`` (retry).

Everything goes through the command runner as ``bash -c`` with positional arguments, so the
same code drives "local" processes on a remote login node over SSH.
"""

from __future__ import annotations

from collections.abc import Sequence

from cosmodm_ops.batch.base import CommandResult, CommandRunner, JobSpec, JobState, JobStatus, Scheduler
from cosmodm_ops.batch.schedulers._common import check_ran
from cosmodm_ops.batch.script import log_dir, render

__all__ = ["SUPERVISOR", "LocalScheduler", "parse_local_status"]

_REGISTRY = 'reg=${1:-${COSMODM_LOCAL_JOBS:-$HOME/.cosmodm/jobs}}; shift'

# True when the pid file names a living supervisor of this boot (not a zombie, not a reused pid).
_ALIVE_FN = r'''
_alive() {  # _alive PIDFILE -> sets w j; returns 0 when the supervisor lives
  local b s a
  w=; j=
  [ -r "$1" ] || return 1
  read -r w j b s < "$1" || true
  [ -n "$w" ] && [ "$b" = "$boot" ] || return 1
  [ -r "/proc/$w/stat" ] || return 1
  read -r -a a < "/proc/$w/stat" || return 1
  [ "${a[21]}" = "$s" ] && [ "${a[2]}" != Z ]
}
boot=$(cat /proc/sys/kernel/random/boot_id 2>/dev/null || echo noboot)
'''

#: The supervisor (``<name>.run``): arguments DIR NAME WALLTIME_S.
SUPERVISOR = r'''# CosmoDM-Ops local job supervisor: runs <name>.sh in its own session, enforces the walltime,
# records start, end and exit code. Arguments: DIR NAME WALLTIME_S.
d=$1; name=$2; wall=$3
trap '' HUP
boot=$(cat /proc/sys/kernel/random/boot_id 2>/dev/null || echo noboot)
read -r -a me < /proc/$$/stat
date +%s.%N > "$d/$name.start"
setsid bash "$d/$name.sh" < /dev/null > "$d/$name.out" 2> "$d/$name.err" &
j=$!
echo "$$ $j $boot ${me[21]}" > "$d/$name.pid.tmp" && mv -f -- "$d/$name.pid.tmp" "$d/$name.pid"
trap 'kill -TERM -- "-$j" 2>/dev/null' TERM INT
dog=
if [ "$wall" != 0 ]; then sleep "$wall" & dog=$!; fi
rc=
while [ -z "$rc" ]; do
  who=
  wait -n -p who "$j" ${dog:+"$dog"}
  st=$?
  if [ "$who" = "$j" ]; then
    rc=$st
  elif [ -n "$dog" ] && [ "$who" = "$dog" ]; then
    dog=
    : > "$d/$name.timeout"
    echo "cosmodm: walltime of ${wall} s reached: killing the job" >> "$d/$name.err"
    kill -TERM -- "-$j" 2>/dev/null
    ( sleep 10; kill -KILL -- "-$j" 2>/dev/null ) &
  fi
done
date +%s.%N > "$d/$name.end"
echo "$rc" > "$d/$name.rc.tmp" && mv -f -- "$d/$name.rc.tmp" "$d/$name.rc"
trap - TERM INT
kill -TERM -- "-$$" 2>/dev/null  # our own helpers (walltime sleep, grace killer)
exit 0
'''

# Arguments: REGISTRY NAME WORKDIR WALLTIME_S SUPERVISOR; stdin: the job script. Prints "live|submitted NAME".
_SUBMIT = _ALIVE_FN + _REGISTRY + r'''
set -eu
name=$1; wd=$2; wall=$3; sup=$4
d="$wd/.cosmodm"
old_umask=$(umask)
umask 077
mkdir -p -- "$reg" "$d"
exec 9> "$reg/.$name.lock"
flock -w 60 9
if [ -e "$reg/$name/$name.pid" ] && [ ! -e "$reg/$name/$name.rc" ] && _alive "$reg/$name/$name.pid"; then
  echo "live $name"
  exit 0
fi
for ext in rc pid start end timeout cancelled out err; do rm -f -- "$d/$name.$ext"; done
cat > "$d/$name.sh.tmp" && mv -f -- "$d/$name.sh.tmp" "$d/$name.sh"
printf '%s' "$sup" > "$d/$name.run"
ln -sfn -- "$d" "$reg/$name"
umask "$old_umask"  # the job's own products keep the usual permissions
setsid bash "$d/$name.run" "$d" "$name" "$wall" < /dev/null >> "$d/$name.sup" 2>&1 9>&- &
for _ in $(seq 1000); do
  [ -s "$d/$name.pid" ] && { echo "submitted $name"; exit 0; }
  sleep 0.01
done
echo "the supervisor of $name did not start (see $d/$name.sup)" >&2
exit 1
'''

# Arguments: REGISTRY ID...; one line per id: see parse_local_status.
_STATUS = _ALIVE_FN + _REGISTRY + r'''
now=$(date +%s.%N); host=$(hostname)
for id in "$@"; do
  f="$reg/$id/$id"
  if [ ! -e "$reg/$id" ]; then echo "$id|missing|||||||||$host"; continue; fi
  rc=; st=; en=; live=0; pid=0; tmo=0; can=0
  [ -r "$f.rc" ] && rc=$(cat "$f.rc")
  [ -r "$f.start" ] && st=$(cat "$f.start")
  [ -r "$f.end" ] && en=$(cat "$f.end")
  [ -e "$f.pid" ] && pid=1
  _alive "$f.pid" && live=1
  [ -e "$f.timeout" ] && tmo=1
  [ -e "$f.cancelled" ] && can=1
  echo "$id|found|$rc|$live|$pid|$tmo|$can|$st|$en|$now|$host"
done
'''

# Arguments: REGISTRY ID. Marks the job cancelled, SIGTERMs its process group, SIGKILLs after 5 s,
# and waits (up to 10 s) for the supervisor to record the exit code.
_CANCEL = _ALIVE_FN + _REGISTRY + r'''
id=$1; f="$reg/$id/$id"
[ -e "$reg/$id" ] || { echo "no local job $id (registry $reg)" >&2; exit 1; }
[ -e "$f.rc" ] && { echo "job $id has already ended"; exit 0; }
: > "$f.cancelled"
if ! _alive "$f.pid"; then echo "job $id is not running (marked cancelled)"; exit 0; fi
kill -TERM -- "-$j" 2>/dev/null || true
for _ in $(seq 100); do [ -e "$f.rc" ] && exit 0; sleep 0.05; done
kill -KILL -- "-$j" 2>/dev/null || true
for _ in $(seq 100); do [ -e "$f.rc" ] && exit 0; sleep 0.05; done
echo "job $id: killed, but its supervisor recorded no exit code" >&2
exit 0
'''


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def parse_local_status(text: str, job_ids: Sequence[str]) -> dict[str, JobStatus]:
    """Translate the status script's lines (``id|found|rc|live|pidfile|timeout|cancelled|start|end|now|host``)."""
    seen: dict[str, JobStatus] = {}
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) != 11:
            continue
        jid, found, rc_s, live, pidfile, tmo, can, start, end, now, host = parts
        if found == "missing":
            seen[jid] = JobStatus(jid, JobState.UNKNOWN, reason="no such local job (registry has no entry)",
                                  raw_state="missing")
            continue
        t0, t1, tnow = _float(start), _float(end), _float(now)
        elapsed = None if t0 is None else max(0.0, (t1 if t1 is not None else (tnow or t0)) - t0)
        rc = int(rc_s) if rc_s.strip().lstrip("-").isdigit() else None
        if rc is not None:
            if rc == 0:
                state, raw = JobState.COMPLETED, "exited"
            elif can == "1":
                state, raw = JobState.CANCELLED, "cancelled"
            elif tmo == "1":
                state, raw = JobState.TIMEOUT, "walltime"
            else:
                state, raw = JobState.FAILED, "exited"
            reason = None if rc == 0 else (f"killed by signal {rc - 128}" if rc > 128 else None)
            seen[jid] = JobStatus(jid, state, exit_code=rc, elapsed_s=elapsed, nodes=host, reason=reason,
                                  raw_state=raw)
        elif live == "1":
            seen[jid] = JobStatus(jid, JobState.RUNNING, elapsed_s=elapsed, nodes=host, raw_state="running")
        elif pidfile == "0":
            seen[jid] = JobStatus(jid, JobState.PENDING, nodes=host, reason="starting", raw_state="starting")
        elif can == "1":
            seen[jid] = JobStatus(jid, JobState.CANCELLED, elapsed_s=elapsed, nodes=host, raw_state="cancelled",
                                  reason="cancelled; its supervisor is gone")
        else:
            seen[jid] = JobStatus(
                jid, JobState.NODE_FAIL, elapsed_s=elapsed, nodes=host, raw_state="lost",
                reason="the job's supervisor is gone without an exit code (machine restarted or process killed)")
    return {j: seen.get(j, JobStatus(j, JobState.UNKNOWN, reason="not reported by the status command"))
            for j in job_ids}


class LocalScheduler(Scheduler):
    """Detached processes with pid, exit-code and walltime handling (see the module docstring).

    Parameters
    ----------
    registry : str, optional
        Registry folder on the side where commands run; default ``$COSMODM_LOCAL_JOBS`` or
        ``~/.cosmodm/jobs`` (resolved by that side's shell).
    walltime_s : float, optional
        Override every job's walltime in seconds (tests and demos); default ``spec.walltime_min * 60``.
        0 means no walltime.
    """

    name = "local"

    def __init__(self, registry: str | None = None, walltime_s: float | None = None) -> None:
        self.registry = registry
        self.walltime_s = walltime_s

    def _reg(self) -> str:
        return self.registry or ""

    def render_script(self, spec: JobSpec) -> str:
        """The common script with no directives (the supervisor applies the walltime)."""
        return render(spec, system="local")

    def submit(self, runner: CommandRunner, spec: JobSpec) -> str:
        """Start the job detached (or return the live job of that name); the job id is the name."""
        wall = self.walltime_s if self.walltime_s is not None else spec.walltime_min * 60
        wall_text = str(int(wall)) if float(wall).is_integer() else f"{float(wall):.3f}"
        argv = ["bash", "-c", _SUBMIT, "cosmodm-local-submit", self._reg(), spec.name, spec.workdir,
                wall_text, SUPERVISOR]
        res = runner.run(argv, stdin=self.render_script(spec), timeout=120)
        check_ran(self.name, f"submission of {spec.name} (log folder {log_dir(spec)})", res, submit=True)
        return spec.name

    def status_argv(self, job_ids: Sequence[str]) -> list[list[str]]:
        """One ``bash -c`` reading every job's files."""
        return [["bash", "-c", _STATUS, "cosmodm-local-status", self._reg(), *job_ids]]

    def parse_status(self, outputs: Sequence[CommandResult], job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """See :func:`parse_local_status`."""
        check_ran(self.name, "status", outputs[0])
        return parse_local_status(outputs[0].stdout, job_ids)

    def cancel_argv(self, job_id: str) -> list[str]:
        """Mark cancelled, SIGTERM the job's process group, SIGKILL after 5 s, wait for the exit code."""
        return ["bash", "-c", _CANCEL, "cosmodm-local-cancel", self._reg(), job_id]
