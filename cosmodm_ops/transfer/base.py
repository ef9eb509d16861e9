"""The transfer interface."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

__all__ = ["Transfer", "TransferError", "TransferItem"]


@dataclass(frozen=True)
class TransferItem:
    """One file to move: source, destination and (optionally) its known sha256."""

    src: str
    dst: str
    sha256: str | None = None


class TransferError(RuntimeError):
    """A transfer that failed; the message names the file and what went wrong."""


class Transfer(abc.ABC):
    """Move files with checksums. ``run`` blocks; ``submit``/``status`` exist where the service is async."""

    method: str = ""

    @abc.abstractmethod
    def run(self, items: list[TransferItem]) -> dict[str, Any]:
        """Move every item and verify it; returns ``{"files", "bytes", "linked", "copied"}``."""
