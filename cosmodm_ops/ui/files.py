"""Downloads from the archive: a path that resolves inside the root only, and HTTP byte ranges.

:func:`safe_archive_file` is the one gate every download goes through: it refuses absolute paths,
``..`` components, encoded separators, NUL, and anything whose *resolved* path (symbolic links
followed) is not under the resolved archive root.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

__all__ = ["FileRefused", "RangeNotSatisfiable", "iter_file", "parse_range", "safe_archive_file"]


class FileRefused(ValueError):
    """A download path that is not a file inside the archive root (the message says why)."""


class RangeNotSatisfiable(ValueError):
    """A ``Range`` header that does not fit the file."""


def safe_archive_file(root: str | os.PathLike[str], rel: str) -> Path:
    """The file ``rel`` (relative, POSIX) inside ``root``, or :class:`FileRefused`.

    Parameters
    ----------
    root : path
        The archive root.
    rel : str
        Path relative to the root, as the archive stores it (already URL-decoded once).
    """
    text = str(rel)
    if not text or "\x00" in text or "\\" in text or "%" in text:
        msg = f"archive path {text!r}: empty, or has NUL, backslash or percent-encoding"
        raise FileRefused(msg)
    pure = PurePosixPath(text)
    if pure.is_absolute() or any(part in ("..", "") for part in text.split("/")):
        msg = f"archive path {text!r}: must be relative, without '..' or empty components"
        raise FileRefused(msg)
    base = Path(root).resolve()
    try:
        full = (base / pure).resolve(strict=True)
    except (OSError, RuntimeError) as err:
        msg = f"archive path {text!r}: no such file"
        raise FileRefused(msg) from err
    if not full.is_relative_to(base):
        msg = f"archive path {text!r}: resolves outside the archive root"
        raise FileRefused(msg)
    if not full.is_file():
        msg = f"archive path {text!r}: not a regular file"
        raise FileRefused(msg)
    return full


_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(start, end)`` inclusive for a single-range ``Range: bytes=a-b`` header, None for the whole file.

    Multi-range requests are answered with the whole file (RFC 9110 allows ignoring Range).
    """
    if not header:
        return None
    m = _RANGE.match(header.strip())
    if not m:
        return None
    a, b = m.group(1), m.group(2)
    if a == "" and b == "":
        return None
    if a == "":  # suffix: the last b bytes
        n = int(b)
        if n == 0:
            msg = f"range {header!r}: empty suffix"
            raise RangeNotSatisfiable(msg)
        return max(0, size - n), size - 1
    start = int(a)
    end = size - 1 if b == "" else min(int(b), size - 1)
    if start >= size or end < start:
        msg = f"range {header!r} does not fit a file of {size} bytes"
        raise RangeNotSatisfiable(msg)
    return start, end


def iter_file(path: Path, start: int, end: int, chunk: int = 1 << 16) -> Iterator[bytes]:
    """Bytes ``start..end`` (inclusive) of a file, in chunks."""
    with open(path, "rb") as fh:
        fh.seek(start)
        left = end - start + 1
        while left > 0:
            data = fh.read(min(chunk, left))
            if not data:
                return
            left -= len(data)
            yield data
