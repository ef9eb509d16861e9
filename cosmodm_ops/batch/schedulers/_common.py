"""Helpers shared by the scheduler modules (private)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from cosmodm_ops.batch.base import CommandResult, JobSpec, SchedulerError, SubmitError
from cosmodm_ops.batch.script import log_dir

__all__ = ["check_ran", "first_line", "parse_duration", "parse_memory_mb", "script_path", "write_and_run_argv"]

# Writes stdin to a private file ($2) in a folder ($1, made if missing), then runs the rest of the arguments
# ("$@" after shift 2) with the file appended. Paths travel as positional arguments, never inside the
# shell text, so a runner that joins argv with shlex (SSH) keeps them intact.
# umask 077 only while the folder and the script are written: sbatch/qsub pass the submitting shell's umask
# to the job, whose products must keep the login's usual permissions (the archive, transfers, the group).
_WRITE_AND_RUN = ('old=$(umask); umask 077; mkdir -p -- "$1" && cat > "$2" && umask "$old" && f=$2 && shift 2 '
                  '&& exec "$@" "$f"')


def script_path(spec: JobSpec, suffix: str = ".sh") -> str:
    """``<workdir>/.cosmodm/<name><suffix>``: the submitted script, kept for people who debug."""
    return f"{log_dir(spec)}/{spec.name}{suffix}"


def write_and_run_argv(folder: str, path: str, argv: Sequence[str]) -> list[str]:
    """One command that writes stdin to ``path`` (mode 600, folder made) and runs ``argv + [path]`` under the
    login's own umask."""
    return ["bash", "-c", _WRITE_AND_RUN, "cosmodm-submit", folder, path, *argv]


def check_ran(system: str, what: str, res: CommandResult, *, submit: bool = False) -> None:
    """Raise SubmitError/SchedulerError when a scheduler command failed, with its stderr."""
    if res.returncode == 0:
        return
    detail = (res.stderr.strip() or res.stdout.strip())[-800:]
    hint = " (is the batch system's client installed on the submit host?)" if res.returncode == 127 else ""
    msg = f"{system}: {what} failed (exit {res.returncode}){hint}: {detail}"
    if submit:
        raise SubmitError(msg, stdout=res.stdout, stderr=res.stderr, retcode=res.returncode)
    raise SchedulerError(msg)


def first_line(text: str) -> str:
    """The first non-empty line of ``text`` (stripped), or ''."""
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


_DURATION = re.compile(r"^(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+(?:\.\d+)?)$")


def parse_duration(text: str | None) -> float | None:
    """Seconds from ``[D-][HH:]MM:SS`` (Slurm, PBS, LoadLeveler), a plain number of seconds, or None."""
    if text is None:
        return None
    text = text.strip()
    if not text or text.upper() in {"UNLIMITED", "INVALID", "N/A"}:
        return None
    try:
        return float(text)
    except ValueError:
        pass
    m = _DURATION.match(text)
    if not m:
        return None
    days, hours, minutes, seconds = m.groups()
    return int(days or 0) * 86400 + int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds)


_MEM = re.compile(r"^([0-9.]+)\s*([KMGTP]?)(I?B)?$", re.IGNORECASE)
_MEM_UNIT = {"": 1 / 1024**2, "K": 1 / 1024, "M": 1.0, "G": 1024.0, "T": 1024.0**2, "P": 1024.0**3}


def parse_memory_mb(text: str | None, *, bare_unit: str = "") -> float | None:
    """MiB from ``1234K``, ``12.5M``, ``3G``, ``2048kb`` (PBS); a bare number is in ``bare_unit``."""
    if text is None:
        return None
    text = text.strip()
    if not text:
        return None
    m = _MEM.match(text)
    if not m:
        return None
    unit = (m.group(2) or bare_unit).upper() if m.group(2) or not m.group(3) else "B"
    if unit == "B":
        unit = ""
    return float(m.group(1)) * _MEM_UNIT.get(unit, 1.0)

