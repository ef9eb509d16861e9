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
``<name>.out``, ``<name>.err``, ``<name>.start``, ``<name>.cancelled``, ``<name>.rss``
    logs, start time, cancel marker, peak RSS in KiB (GNU ``/usr/bin/time``, where installed)

The **job id is the job name**. A registry folder (``$COSMODM_LOCAL_JOBS``, default
``~/.cosmodm/jobs``, resolved where the command runs) holds a symlink ``<name> ->
<workdir>/.cosmodm``, so status and cancel need only the id. Submission holds a
``flock`` on ``<registry>/.<name>.lock`` and returns the running job of that name if there is
one (idempotent). A job whose supervisor vanished without an exit code (machine rebooted,
``kill -9``) is reported as ``NODE_FAIL`` (retry).

**Job arrays** (``JobSpec.array_size``) are emulated: a launcher (``<name>.arr``, pid in
``<name>.pid``, sizes in ``<name>.array``) starts element ``i`` as an ordinary local job named
``<name>.<i>`` (the same supervisor, so the same restart-safe ``<name>.<i>.pid``/``.rc``/``.out``/``.err``
files; its script is a link to ``<name>.sh``, run with ``COSMODM_ARRAY_INDEX=i``), at most
``array_max_parallel`` at once. Element ids are ``<name>.<i>`` (found through the array's registry
entry); status reports an element the launcher has not started yet as PENDING, or NODE_FAIL when the
launcher is gone; cancelling ``<name>`` cancels every element, ``<name>.<i>`` one element.

Everything goes through the command runner as ``bash -c`` with positional arguments, so the
same code drives "local" processes on a remote login node over SSH.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from cosmodm_ops.batch.base import CommandResult, CommandRunner, JobSpec, JobState, JobStatus, Scheduler
from cosmodm_ops.batch.schedulers._common import check_ran
from cosmodm_ops.batch.script import log_dir, render

__all__ = ["LAUNCHER", "SUPERVISOR", "LocalScheduler", "parse_local_status"]

_JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
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
_find() {  # _find ID -> f (file prefix of the job) and arr (file prefix of its array, elements only)
  local b=${1%.*}
  f="$reg/$1/$1"; arr=
  [ -e "$reg/$1" ] && return 0
  [ "$b" != "$1" ] && [ -e "$reg/$b/$b.array" ] || return 1
  f="$reg/$b/$1"; arr="$reg/$b/$b"
}
'''

#: The supervisor (``<name>.run``): arguments DIR NAME WALLTIME_S.
SUPERVISOR = r'''# CosmoDM-Ops local job supervisor: runs <name>.sh in its own session, enforces the walltime,
# records start, end and exit code. Arguments: DIR NAME WALLTIME_S.
d=$1; name=$2; wall=$3
trap '' HUP
boot=$(cat /proc/sys/kernel/random/boot_id 2>/dev/null || echo noboot)
read -r -a me < /proc/$$/stat
date +%s.%N > "$d/$name.start"
if [ -e "$d/$name.cancelled" ]; then  # an array element cancelled before its launcher started it
  echo "$$ $$ $boot ${me[21]}" > "$d/$name.pid"; date +%s.%N > "$d/$name.end"
  echo 143 > "$d/$name.rc.tmp" && mv -f -- "$d/$name.rc.tmp" "$d/$name.rc"; exit 0
fi
if [ -x /usr/bin/time ]; then  # GNU time records the peak RSS (KiB) of the job's processes
  setsid /usr/bin/time -q -f %M -o "$d/$name.rss" bash "$d/$name.sh" < /dev/null > "$d/$name.out" 2> "$d/$name.err" &
else
  setsid bash "$d/$name.sh" < /dev/null > "$d/$name.out" 2> "$d/$name.err" &
fi
j=$!
# the pid file is believed as soon as it exists: wait until the job leads its own process group
SECONDS=0
while [ "$SECONDS" -lt 60 ]; do
  read -r -a a < "/proc/$j/stat" 2>/dev/null || break
  [ "${a[4]}" = "$j" ] && break
  sleep 0.01
done
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
old_umask=$(umask)
umask 077
mkdir -p -- "$reg" "$wd/.cosmodm"
d=$(cd -- "$wd/.cosmodm" && pwd -P)  # absolute: the registry links to it
find "$reg" -maxdepth 1 -type l -mtime +60 -delete 2>/dev/null || true  # forget jobs older than 60 days
exec 9> "$reg/.$name.lock"
flock -w 60 9
if [ -e "$reg/$name/$name.pid" ] && [ ! -e "$reg/$name/$name.rc" ] && _alive "$reg/$name/$name.pid"; then
  echo "live $name"
  exit 0
fi
for ext in rc pid start end timeout cancelled out err rss; do rm -f -- "$d/$name.$ext"; done
cat > "$d/$name.sh.tmp" && mv -f -- "$d/$name.sh.tmp" "$d/$name.sh"
printf '%s' "$sup" > "$d/$name.run"
ln -sfn -- "$d" "$reg/$name"
umask "$old_umask"  # the job's own products keep the usual permissions
setsid bash "$d/$name.run" "$d" "$name" "$wall" < /dev/null >> "$d/$name.sup" 2>&1 9>&- &
SECONDS=0
while [ "$SECONDS" -lt 90 ]; do  # generous: a loaded machine may take a while to fork
  [ -s "$d/$name.pid" ] && { echo "submitted $name"; exit 0; }
  sleep 0.01
done
echo "the supervisor of $name did not start within 90 s (see $d/$name.sup)" >&2
exit 1
'''

#: The array launcher (``<name>.arr``): arguments DIR NAME WALLTIME_S N M. Starts element i as the local
#: job ``<name>.<i>`` (the supervisor ``<name>.run``, script link ``<name>.<i>.sh`` -> ``<name>.sh``),
#: at most M at once, skipping cancelled elements; its own pid file is ``<name>.pid``.
LAUNCHER = r'''# CosmoDM-Ops local job-array launcher. Arguments: DIR NAME WALLTIME_S N M.
d=$1; name=$2; wall=$3; n=$4; m=$5
trap '' HUP
boot=$(cat /proc/sys/kernel/random/boot_id 2>/dev/null || echo noboot)
read -r -a me < /proc/$$/stat
echo "$$ $$ $boot ${me[21]}" > "$d/$name.pid.tmp" && mv -f -- "$d/$name.pid.tmp" "$d/$name.pid"
run=0
for ((i = 0; i < n; i++)); do
  while [ "$run" -ge "$m" ]; do wait -n; run=$((run - 1)); done
  [ -e "$d/$name.cancelled" ] && break
  e=$name.$i
  [ -e "$d/$e.cancelled" ] && continue
  ln -sfn -- "$name.sh" "$d/$e.sh"
  COSMODM_ARRAY_INDEX=$i setsid bash "$d/$name.run" "$d" "$e" "$wall" < /dev/null >> "$d/$name.sup" 2>&1 &
  run=$((run + 1))
  SECONDS=0  # its pid file exists before we go on: an element is never "not started" once we are gone
  while [ ! -s "$d/$e.pid" ] && [ "$SECONDS" -lt 90 ]; do sleep 0.01; done
done
wait
date +%s.%N > "$d/$name.end"
'''

# Arguments: REGISTRY NAME WORKDIR WALLTIME_S N M SUPERVISOR LAUNCHER; stdin: the job script.
# Prints "live|submitted NAME". The array is live while its launcher or any element runs.
_SUBMIT_ARRAY = _ALIVE_FN + _REGISTRY + r'''
set -eu
name=$1; wd=$2; wall=$3; n=$4; m=$5; sup=$6; launcher=$7
old_umask=$(umask)
umask 077
mkdir -p -- "$reg" "$wd/.cosmodm"
d=$(cd -- "$wd/.cosmodm" && pwd -P)
exec 9> "$reg/.$name.lock"
flock -w 60 9
a="$reg/$name/$name"
if [ -e "$a.array" ] && [ ! -e "$a.cancelled" ]; then
  read -r old _ < "$a.array"
  _alive "$a.pid" && { echo "live $name"; exit 0; }
  for ((i = 0; i < old; i++)); do
    [ ! -e "$a.$i.rc" ] && _alive "$a.$i.pid" && { echo "live $name"; exit 0; }
  done
fi
files=()
for ext in rc pid start end cancelled sup array; do files+=("$d/$name.$ext"); done
for ((i = 0; i < n; i++)); do
  for ext in rc pid start end timeout cancelled out err rss sh; do files+=("$d/$name.$i.$ext"); done
done
rm -f -- "${files[@]}"
cat > "$d/$name.sh.tmp" && mv -f -- "$d/$name.sh.tmp" "$d/$name.sh"
printf '%s' "$sup" > "$d/$name.run"
printf '%s' "$launcher" > "$d/$name.arr"
echo "$n $m" > "$d/$name.array"
ln -sfn -- "$d" "$reg/$name"
umask "$old_umask"
setsid bash "$d/$name.arr" "$d" "$name" "$wall" "$n" "$m" < /dev/null >> "$d/$name.sup" 2>&1 9>&- &
SECONDS=0
while [ "$SECONDS" -lt 90 ]; do
  [ -s "$d/$name.pid" ] && { echo "submitted $name"; exit 0; }
  sleep 0.01
done
echo "the launcher of $name did not start within 90 s (see $d/$name.sup)" >&2
exit 1
'''

# Arguments: REGISTRY ID...; one line per id: see parse_local_status.
_STATUS = _ALIVE_FN + _REGISTRY + r'''
now=$(date +%s.%N); host=$(hostname)
for id in "$@"; do
  if ! _find "$id"; then echo "$id|missing|||||||||$host|"; continue; fi
  rc=; st=; en=; rss=; live=0; pid=0; tmo=0; can=0
  [ -e "$f.pid" ] && pid=1
  _alive "$f.pid" && live=1  # before reading .rc: the supervisor writes .rc, then exits
  if [ "$pid" = 0 ] && [ -n "$arr" ]; then  # an element not started yet: is its launcher alive?
    if _alive "$arr.pid"; then pid=q; else pid=x; fi
    [ -e "$arr.cancelled" ] && can=1
  fi
  [ -r "$f.rc" ] && read -r rc < "$f.rc"  # builtins only: no fork per job (hundreds of jobs per poll)
  [ -r "$f.start" ] && read -r st < "$f.start"
  [ -r "$f.end" ] && read -r en < "$f.end"
  [ -r "$f.rss" ] && read -r rss < "$f.rss"
  [ -e "$f.timeout" ] && tmo=1
  [ -e "$f.cancelled" ] && can=1
  echo "$id|found|$rc|$live|$pid|$tmo|$can|$st|$en|$now|$host|$rss"
done
'''

# Arguments: REGISTRY ID. Marks the job cancelled, SIGTERMs its process group, SIGKILLs after 5 s,
# and waits (up to 10 s) for the supervisor to record the exit code.
_CANCEL = _ALIVE_FN + _REGISTRY + r'''
id=$1
_find "$id" || { echo "no local job $id (registry $reg)" >&2; exit 1; }
if [ -e "$f.array" ]; then  # the whole array: stop the launcher, then every element
  : > "$f.cancelled"
  _alive "$f.pid" && kill -TERM "$w" 2>/dev/null
  read -r n m < "$f.array"
  left=()
  for ((i = 0; i < n; i++)); do
    e="$f.$i"
    [ -e "$e.rc" ] && continue
    : > "$e.cancelled"
    # started (it checks the marker after writing .start) but no pid file yet: it is about to write one
    for _ in $(seq 100); do [ -e "$e.start" ] && [ ! -e "$e.pid" ] || break; sleep 0.05; done
    if _alive "$e.pid"; then kill -TERM -- "-$j" 2>/dev/null; left+=("$e $j"); fi
  done
  for _ in $(seq 100); do
    busy=0; for x in "${left[@]}"; do [ -e "${x% *}.rc" ] || busy=1; done
    [ "$busy" = 0 ] && exit 0; sleep 0.05
  done
  for x in "${left[@]}"; do kill -KILL -- "-${x##* }" 2>/dev/null; done
  exit 0
fi
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


def _checked_id(job_id: str) -> str:
    """Local job ids are job names: refuse anything else (they become paths under the registry)."""
    if not _JOB_NAME.match(str(job_id)):
        msg = f"local job id {job_id!r} is not a job name ([A-Za-z0-9][A-Za-z0-9._-]*)"
        raise ValueError(msg)
    return str(job_id)


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def parse_local_status(text: str, job_ids: Sequence[str]) -> dict[str, JobStatus]:
    """Translate the status script's lines (``id|found|rc|live|pidfile|timeout|cancelled|start|end|now|host|rss``).

    ``pidfile`` is 1 (the supervisor wrote its pid file), 0 (not yet), or for an array element not started
    yet ``q`` (its launcher lives: queued) or ``x`` (its launcher is gone).

    ``rss`` is the peak resident memory in KiB measured by GNU time (empty where it is not installed).
    """
    seen: dict[str, JobStatus] = {}
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) != 12:
            continue
        jid, found, rc_s, live, pidfile, tmo, can, start, end, now, host, rss_s = parts
        rss_kib = _float(rss_s) if rc_s.strip() else None
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
                                  raw_state=raw, max_rss_mb=None if rss_kib is None else rss_kib / 1024.0)
        elif live == "1":
            seen[jid] = JobStatus(jid, JobState.RUNNING, elapsed_s=elapsed, nodes=host, raw_state="running")
        elif pidfile in {"q", "x"} and can == "1":
            seen[jid] = JobStatus(jid, JobState.CANCELLED, nodes=host, raw_state="cancelled",
                                  reason="cancelled before it started")
        elif pidfile == "q":
            seen[jid] = JobStatus(jid, JobState.PENDING, nodes=host, raw_state="queued",
                                  reason="array element waiting for a slot (array_max_parallel)")
        elif pidfile == "x":
            seen[jid] = JobStatus(jid, JobState.NODE_FAIL, nodes=host, raw_state="lost",
                                  reason="the array's launcher is gone before it started this element")
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
        """The common script with no directives (the supervisor applies the walltime; arrays: index from the launcher)."""
        return render(spec, system="local", array_index="${COSMODM_ARRAY_INDEX:-}")

    def submit(self, runner: CommandRunner, spec: JobSpec) -> str:
        """Start the job (an array: its launcher) detached, or return the live one of that name; the id is the name."""
        wall = self.walltime_s if self.walltime_s is not None else spec.walltime_min * 60
        wall_text = str(int(wall)) if float(wall).is_integer() else f"{float(wall):.3f}"
        if spec.is_array:
            n = int(spec.array_size or 0)
            argv = ["bash", "-c", _SUBMIT_ARRAY, "cosmodm-local-submit", self._reg(), spec.name, spec.workdir,
                    wall_text, str(n), str(int(spec.array_max_parallel or n)), SUPERVISOR, LAUNCHER]
        else:
            argv = ["bash", "-c", _SUBMIT, "cosmodm-local-submit", self._reg(), spec.name, spec.workdir,
                    wall_text, SUPERVISOR]
        res = runner.run(argv, stdin=self.render_script(spec), timeout=120)
        check_ran(self.name, f"submission of {spec.name} (log folder {log_dir(spec)})", res, submit=True)
        return spec.name

    def array_element_ids(self, job_id: str, n: int) -> list[str]:
        """``<name>.0 .. <name>.<n-1>`` (each a local job of its own)."""
        return [f"{_checked_id(job_id)}.{i}" for i in range(int(n))]

    def status_argv(self, job_ids: Sequence[str]) -> list[list[str]]:
        """One ``bash -c`` reading every job's files."""
        return [["bash", "-c", _STATUS, "cosmodm-local-status", self._reg(), *map(_checked_id, job_ids)]]

    def parse_status(self, outputs: Sequence[CommandResult], job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """See :func:`parse_local_status`."""
        check_ran(self.name, "status", outputs[0])
        return parse_local_status(outputs[0].stdout, job_ids)

    def cancel_argv(self, job_id: str) -> list[str]:
        """Mark cancelled, SIGTERM the job's process group, SIGKILL after 5 s, wait for the exit code."""
        return ["bash", "-c", _CANCEL, "cosmodm-local-cancel", self._reg(), _checked_id(job_id)]
