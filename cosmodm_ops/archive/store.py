"""Atomic, checksummed file placement under the archive root (no database here).

A file enters the archive in three steps: copied to a hidden temporary name in the
destination folder (same filesystem) while its sha256 is computed, fsynced, then
hard-linked to its final name, which fails rather than overwrite an existing file; the
folder is fsynced and the temporary name removed. A process killed at any point leaves
either no file at the final name or the complete file, never a partial one (temporary
names start with ``.`` and end with ``.part``; :func:`stale_temporaries` lists leftovers).
A full file system (``ENOSPC``, ``EDQUOT``) raises :class:`ArchiveUnavailable` naming the folder and
the space needed, after the temporary is removed: nothing is left behind, and a retry after space is
freed succeeds.
"""

from __future__ import annotations

import errno
import hashlib
import os
import uuid
from pathlib import Path

from cosmodm_ops.archive.errors import ArchiveUnavailable

__all__ = ["fsync_dir", "place_file", "sha256_file", "stale_temporaries"]

_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def fsync_dir(path: Path) -> None:
    """fsync a folder (makes the names in it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def place_file(src: str | os.PathLike[str], dst: Path, sha256: str, *, sync_dir: bool = True) -> str:
    """Copy ``src`` to ``dst`` atomically, never overwriting.

    With ``sync_dir=False`` the caller fsyncs ``dst.parent`` itself (once for many files)
    before it records the file anywhere.

    Returns
    -------
    str
        ``"created"``: the file is now at ``dst``; ``"same"``: ``dst`` already held a file with
        this sha256 (nothing written); ``"taken"``: ``dst`` holds a different file (nothing written).

    Raises
    ------
    ValueError
        When the copied bytes do not have the expected sha256 (the source changed).
    ArchiveUnavailable
        When the archive's file system is full (nothing is left at ``dst`` or in temporaries).
    """
    try:
        return _place(src, Path(dst), sha256, sync_dir)
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        need = os.stat(src).st_size
        msg = (f"archive file system full: cannot write {dst} ({need} bytes; {_free_bytes(Path(dst))} bytes free "
               f"there): nothing was written; free space under the archive root and retry")
        raise ArchiveUnavailable(msg) from err


def _free_bytes(path: Path) -> int | str:
    """Bytes free on the file system of ``path`` (its nearest existing parent); "?" when unknown."""
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        st = os.statvfs(path)
    except OSError:
        return "?"
    return st.f_bavail * st.f_frsize


def _place(src: str | os.PathLike[str], dst: Path, sha256: str, sync_dir: bool) -> str:
    """:func:`place_file` without the translation of a full file system."""
    if dst.exists():
        return "same" if sha256_file(dst) == sha256 else "taken"
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.parent / f".{dst.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part"
    h = hashlib.sha256()
    try:
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            while chunk := fin.read(_CHUNK):
                h.update(chunk)
                fout.write(chunk)
            fout.flush()
            os.fsync(fout.fileno())
        if h.hexdigest() != sha256:
            msg = f"{src}: sha256 changed while copying into the archive ({h.hexdigest()} != {sha256})"
            raise ValueError(msg)
        try:
            os.link(tmp, dst)
        except FileExistsError:
            return "same" if sha256_file(dst) == sha256 else "taken"
        except OSError as err:  # filesystems without hard links: rename (dst checked just above)
            if err.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                raise
            os.rename(tmp, dst)
        if sync_dir:
            fsync_dir(dst.parent)
        return "created"
    finally:
        tmp.unlink(missing_ok=True)


def stale_temporaries(root: str | os.PathLike[str]) -> list[Path]:
    """Temporary files left by killed writers (``.*.part``); safe to delete when no register runs."""
    return sorted(Path(root).rglob(".*.part"))
