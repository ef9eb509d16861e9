"""Submit-script rendering shared by every scheduler: one bash body, per-scheduler directives.

The body is the same everywhere, so a job behaves the same under Slurm, PBS, LoadLeveler,
HTCondor or the local runner::

    #!/bin/bash
    <directives of the batch system>
    set -euo pipefail
    export COSMODM_JOB_NAME=... (and the spec's environment, each value shlex-quoted)
    <job arrays: export COSMODM_ARRAY_INDEX (0-based) from the batch system's own variable>
    cd -- <workdir>
    <RAM disk <ramdisk>/<name>: made, exported as COSMODM_RAMDISK, removed by an EXIT trap>
    <the command, shlex.join(argv)>
    exit <the command's exit code>

Every value that reaches the script is validated (no newlines, no NUL) or quoted, so a job
name, a path or an environment value cannot inject shell code or extra directives.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Iterable

from cosmodm_ops.batch.base import JobSpec

__all__ = [
    "LOG_DIR",
    "directive_value",
    "log_dir",
    "log_paths",
    "memory_mb",
    "render",
    "render_body",
    "walltime_hms",
]

#: Folder (under the job's workdir) holding the script, stdout, stderr and bookkeeping files.
LOG_DIR = ".cosmodm"

# Directive values are read by the batch system's own parser, not by a shell: keep them plain.
_DIRECTIVE_SAFE = re.compile(r"^[A-Za-z0-9_./:@%+,=~-]+$")


#: What an allocation failure prints (Python, C++, C/glibc, numpy): the job's stderr is searched for it.
_OOM_PATTERN = "MemoryError|std::bad_alloc|Cannot allocate memory|[Oo]ut of memory|Unable to allocate"


def log_dir(spec: JobSpec) -> str:
    """``<workdir>/.cosmodm``: where every scheduler writes the job's files (made at submit)."""
    return f"{spec.workdir.rstrip('/') or '/'}/{LOG_DIR}".replace("//", "/")


def log_paths(spec: JobSpec, index: str | int | None = None) -> tuple[str, str]:
    """(stdout, stderr) paths of the job: ``<workdir>/.cosmodm/<name>.out`` and ``.err``.

    With ``index`` (an array element's index, or the batch system's placeholder for it such as
    Slurm's ``%a``): ``<name>.<index>.out`` and ``.err``.
    """
    base = f"{log_dir(spec)}/{spec.name}" + ("" if index is None else f".{index}")
    return f"{base}.out", f"{base}.err"


def directive_value(key: str, value: object) -> str:
    """A value for a batch directive, refused when it holds spaces, quotes or control characters.

    Raises
    ------
    ValueError
        Naming the field and the value, e.g. a workdir with a space (Slurm/PBS directives cannot quote it).
    """
    text = str(value)
    if not _DIRECTIVE_SAFE.match(text):
        msg = (f"{key}={text!r} cannot go into a batch directive: use letters, digits and ._/:@%+,=~- only "
               "(no spaces or quotes)")
        raise ValueError(msg)
    return text


def walltime_hms(minutes: int) -> str:
    """Walltime as ``HH:MM:SS`` (hours may exceed 24), e.g. 90 -> ``01:30:00``."""
    if minutes < 1:
        msg = f"walltime_min={minutes} must be at least 1"
        raise ValueError(msg)
    return f"{minutes // 60:02d}:{minutes % 60:02d}:00"


def memory_mb(gb: float) -> int:
    """Memory in MiB, rounded up (schedulers kill jobs above the request: never round down)."""
    if gb <= 0:
        msg = f"memory_gb={gb} must be positive"
        raise ValueError(msg)
    return math.ceil(gb * 1024)


def _check_text(key: str, value: str) -> str:
    if "\n" in value or "\r" in value or "\0" in value:
        msg = f"{key}={value!r} contains a newline or NUL: refused in a job script"
        raise ValueError(msg)
    return value


def _array_lines(spec: JobSpec, array_index: str | None) -> list[str]:
    """``COSMODM_ARRAY_INDEX`` from the batch system's variable; the script stops when it is not a number."""
    if not spec.is_array:
        return []
    if not array_index:
        msg = f"job {spec.name}: this batch system's script cannot run a job array"
        raise ValueError(msg)
    return [
        f"COSMODM_ARRAY_INDEX={array_index}",
        ('case "$COSMODM_ARRAY_INDEX" in ""|*[!0-9]*) '
        'echo "cosmodm: no array index (got \'$COSMODM_ARRAY_INDEX\')" >&2; exit 65;; esac'),
        "export COSMODM_ARRAY_INDEX",
    ]


def render_body(spec: JobSpec, array_index: str | None = None) -> str:
    """The scheduler-independent part of the script (environment, workdir, RAM disk, command, exit code).

    Parameters
    ----------
    spec : JobSpec
        The job; for an array (``spec.array_size``) the script exports ``COSMODM_ARRAY_INDEX``.
    array_index : str, optional
        A shell expression giving the element's 0-based index (the scheduler's own variable, e.g.
        ``${SLURM_ARRAY_TASK_ID:-}``): code of the scheduler module, never user input.
    """
    lines = ["set -euo pipefail", f"export COSMODM_JOB_NAME={shlex.quote(spec.name)}"]
    lines += _array_lines(spec, array_index)
    for key in sorted(spec.env):
        value = _check_text(f"env[{key}]", str(spec.env[key]))
        lines.append(f"export {key}={shlex.quote(value)}")
    lines.append(f"cd -- {shlex.quote(_check_text('workdir', spec.workdir))}")
    if spec.ramdisk:
        ram = shlex.quote(_check_text("ramdisk", f"{spec.ramdisk.rstrip('/')}/{spec.name}"))
        if spec.is_array:  # one RAM-disk folder per element
            ram += '."$COSMODM_ARRAY_INDEX"'
        lines += [
            f"COSMODM_RAMDISK={ram}",
            "export COSMODM_RAMDISK",
            'mkdir -p -- "$COSMODM_RAMDISK"',
            # removed whatever happens: normal end, failure, scancel/qdel (SIGTERM), walltime
            "trap 'rm -rf -- \"$COSMODM_RAMDISK\"' EXIT",
        ]
    command = shlex.join(_check_text("command", str(a)) for a in spec.command)
    if spec.memory_ulimit:
        lines.append(f"ulimit -v {memory_mb(spec.memory_gb) * 1024}  # KiB: the batch system does not enforce memory")
    lines += ["set +e", command, "rc=$?"]
    if spec.memory_ulimit:
        from cosmodm_ops.batch.budget import EXIT_OUT_OF_MEMORY

        err = shlex.quote(f"{LOG_DIR}/{spec.name}.err")  # the stderr of log_paths(), from the workdir
        note = f"cosmodm: out of memory under the job's limit of {memory_mb(spec.memory_gb)} MiB (ulimit -v)"
        lines += [
            f'if [ "$rc" -ne 0 ] && grep -qsE {shlex.quote(_OOM_PATTERN)} -- {err}; then',
            f"  echo {shlex.quote(note)} >&2; rc={EXIT_OUT_OF_MEMORY}",
            "fi",
        ]
    lines += [
        'if [ "$rc" -ne 0 ]; then echo "cosmodm: command exited with code $rc" >&2; fi',
        'exit "$rc"',
    ]
    return "\n".join(lines) + "\n"


def render(spec: JobSpec, directives: Iterable[str] = (), *, system: str = "", array_index: str | None = None) -> str:
    """The full script: shebang, the batch system's directives, a header comment, the body.

    ``array_index``: see :func:`render_body` (job arrays only).
    """
    head = ["#!/bin/bash", *directives]
    kind = "job array" if spec.is_array else "job"
    size = f" of {spec.array_size} elements" if spec.is_array else ""
    head.append(f"# CosmoDM-Ops batch {kind} {spec.name}{size}" + (f" ({system})" if system else "")
                + ": rendered by cosmodm_ops.batch; resubmit rather than edit")
    return "\n".join(head) + "\n" + render_body(spec, array_index)
