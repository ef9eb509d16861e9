"""Scratch space: a folder on the RAM disk when it has room, else beside the outputs; always removed."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["scratch_root", "workdir"]

log = logging.getLogger(__name__)


def scratch_root(root: str | os.PathLike[str], need: int, max_fraction: float, fallback: Path) -> Path:
    """``root`` when ``need`` more bytes keep its filesystem under ``max_fraction`` full, else ``fallback/.scratch``.

    A whole tile (hundreds of CCDs) does not fit a RAM disk: its scratch then goes to the
    output filesystem, with a warning.
    """
    base = Path(root)
    probe = base
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    usage = shutil.disk_usage(probe)
    if usage.total - usage.free + need <= max_fraction * usage.total:
        return base
    alt = fallback / ".scratch"
    log.warning("scratch of %.1f GB would fill %s beyond %.0f%%: using %s instead", need / 1e9, probe,
                100 * max_fraction, alt)
    return alt


@contextmanager
def workdir(root: str | os.PathLike[str] | None, label: str) -> Iterator[Path]:
    """A fresh folder ``<root>/<label>.XXXX`` (system temp when ``root`` is None), removed on exit.

    A ``.scratch`` fallback parent (see :func:`scratch_root`) is removed too once empty.
    """
    base = Path(root) if root else None
    if base is not None:
        base.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f"{label}.", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        if base is not None and base.name == ".scratch":
            with contextlib.suppress(OSError):
                base.rmdir()  # only when empty
