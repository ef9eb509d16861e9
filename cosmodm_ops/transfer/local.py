"""Local transfer: hardlink when source and destination share a filesystem, else copy; sha256 verified."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

from cosmodm_ops.fits import file_sha256
from cosmodm_ops.transfer.base import Transfer, TransferError, TransferItem

__all__ = ["LocalTransfer"]


class LocalTransfer(Transfer):
    """Hardlink or copy (to a temporary name, then rename), then verify the checksum.

    An existing destination with the right checksum is left alone (idempotent); one with a
    different checksum is an error (never overwritten silently).
    """

    method = "local"

    def run(self, items: list[TransferItem]) -> dict[str, Any]:
        files = nbytes = linked = copied = 0
        for item in items:
            src, dst = Path(item.src), Path(item.dst)
            if not src.is_file():
                raise TransferError(f"{src}: source file missing")
            want = item.sha256 or file_sha256(src)
            if item.sha256 and file_sha256(src) != item.sha256:
                raise TransferError(f"{src}: checksum differs from the expected {item.sha256[:12]}... (corrupt source?)")
            if dst.exists():
                if file_sha256(dst) == want:
                    files += 1
                    continue
                raise TransferError(f"{dst}: exists with a different checksum; move it away first")
            dst.parent.mkdir(parents=True, exist_ok=True)
            tmp = dst.with_name(f".{dst.name}.{uuid.uuid4().hex[:8]}.part")
            try:
                try:
                    os.link(src, tmp)
                    linked += 1
                except OSError:
                    shutil.copyfile(src, tmp)
                    copied += 1
                if file_sha256(tmp) != want:
                    raise TransferError(f"{dst}: checksum mismatch after copy")
                os.replace(tmp, dst)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
            files += 1
            nbytes += dst.stat().st_size
        return {"files": files, "bytes": nbytes, "linked": linked, "copied": copied}
