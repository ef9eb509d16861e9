"""Bytes every process of a job reads and writes on one file system, counted by syscall tracing (``strace``).

Why syscall tracing, and not the alternatives:

- ``/proc/<pid>/io`` ``rchar``/``wchar`` count every read and write of a process, on every file
  system at once (the RAM disk, pipes, ``/usr``): they cannot be restricted to the output file
  system, which is the whole point of the comparison (ours writes its intermediates to the RAM
  disk, the naive job to the shared disk).
- A separate mounted file system's block-device counters see what reaches the disk, after the
  page cache: a naive job that writes a file and reads it back right away is served from memory,
  so the re-reads -- the load a shared network file system (Lustre, GPFS, NFS) does carry -- would
  not be counted. They also need a loop device and root.
- ``strace -f -y`` prints the path behind every file descriptor of every process and thread of the
  job (the Python workers and every SExtractor, PSFEx, SCAMP run they start), and the byte count
  the kernel returned for each call: exactly the bytes that crossed the file-system interface, by
  path. Files mapped with ``mmap`` are counted at their mapped length as reads (an upper bound:
  pages are only read when touched).

The tracing slows the job (so the traced run is not the timed run); the counts do not depend on it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["IoCount", "count_strace", "traced_argv"]

_CALLS = ("read", "write", "pread64", "pwrite64", "readv", "writev", "preadv", "pwritev", "mmap",
          "copy_file_range", "sendfile")
_WRITES = frozenset({"write", "pwrite64", "writev", "pwritev"})
# [pid] call(fd<path>, ...) = result          or  [pid] call(fd<path>, ... <unfinished ...>
_LINE = re.compile(r"^(?:\[pid\s+)?(\d+)\]?\s+(\w+)\((.*)$")
_FD = re.compile(r"^-?\d+<([^>]*)>")
_MMAP_FD = re.compile(r"^[^,]*,\s*(\d+),[^,]*,[^,]*,\s*-?\d+<([^>]*)>")
_RESULT = re.compile(r"\)\s+=\s+(\d+)")
#: sendfile(out_fd, in_fd, ...) and copy_file_range(fd_in, off_in, fd_out, ...): both files, by path.
_TWO_FDS = {
    "sendfile": re.compile(r"^-?\d+<(?P<dst>[^>]*)>,\s*-?\d+<(?P<src>[^>]*)>"),
    "copy_file_range": re.compile(r"^-?\d+<(?P<src>[^>]*)>,\s*[^,]*,\s*-?\d+<(?P<dst>[^>]*)>"),
}
_RESUMED = re.compile(r"^(?:\[pid\s+)?(\d+)\]?\s+<\.\.\. (\w+) resumed>(.*)$")


def traced_argv(argv: list[str], log: str | Path) -> list[str]:
    """``argv`` run under ``strace -f -y`` writing its trace to ``log`` (file-descriptor calls only)."""
    return ["strace", "-f", "-qq", "-y", "-s", "0", "-e", f"trace={','.join(_CALLS)}", "-e", "signal=none",
            "-o", str(log), *argv]


@dataclass
class IoCount:
    """Bytes read and written under a folder, in total and by file-name suffix group."""

    read: int = 0
    written: int = 0
    by_kind: dict[str, list[int]] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.read + self.written

    def add(self, path: str, nbytes: int, *, write: bool) -> None:
        if write:
            self.written += nbytes
        else:
            self.read += nbytes
        kind = _kind(path)
        rw = self.by_kind.setdefault(kind, [0, 0])
        rw[1 if write else 0] += nbytes


def _kind(path: str) -> str:
    name = Path(path).name
    for suffix in (".fits.fz", ".fits", ".ldac", ".psf", ".head", ".json", ".npz", ".param", ".cat"):
        if name.endswith(suffix):
            return suffix
    return "other"


def count_strace(log: str | Path, root: str | Path | tuple[str | Path, ...]) -> IoCount:
    """Sum a ``traced_argv`` log: bytes read and written by every process on files under ``root`` (or roots)."""
    roots = root if isinstance(root, tuple) else (root,)
    root_s = tuple(str(Path(r).resolve()).rstrip("/") + "/" for r in roots)
    out = IoCount()
    pending: dict[str, tuple[str, str]] = {}  # pid -> (call, path) of an unfinished call

    def take(call: str, path: str, rest: str) -> None:
        if not path.startswith(root_s):
            return
        if call == "mmap":
            m = re.match(r"^[^,]*,\s*(\d+)", rest)
            if m and " = 0x" in rest:
                out.add(path, int(m.group(1)), write=False)
            return
        r = _RESULT.search(rest)
        if r:
            out.add(path, int(r.group(1)), write=call in _WRITES)

    with open(log, errors="replace") as fh:
        for line in fh:
            res = _RESUMED.match(line)
            if res:
                pid, call, rest = res.groups()
                if pid in pending:
                    pcall, path = pending.pop(pid)
                    take(pcall, path, rest)
                continue
            m = _LINE.match(line)
            if not m:
                continue
            pid, call, args = m.groups()
            if call == "mmap":
                fd = _MMAP_FD.match(args)
                if fd:
                    take(call, fd.group(2), args)
                continue
            if call in _TWO_FDS:  # a copy between two files: the source is read, the destination written
                two = _TWO_FDS[call].match(args)
                if two and not args.rstrip().endswith("<unfinished ...>"):
                    src, dst = two.group("src"), two.group("dst")
                    take("read", src, args)
                    take("write", dst, args)
                continue
            fd = _FD.match(args)
            if not fd:
                continue
            if args.rstrip().endswith("<unfinished ...>"):
                pending[pid] = (call, fd.group(1))
                continue
            take(call, fd.group(1), args)
    return out
