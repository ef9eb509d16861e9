"""The transfer interface."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

__all__ = ["Transfer", "TransferError", "TransferItem", "get_transfer"]


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


def get_transfer(method: str, site: Any = None) -> Transfer:
    """The transfer implementation for a site's ``transfer.method`` (``local`` or ``rsync``; Globus is
    built from an Airflow connection by ``cosmodm_ops.airflow.transfers``)."""
    if method == "local":
        from cosmodm_ops.transfer.local import LocalTransfer

        return LocalTransfer()
    if method == "rsync":
        from cosmodm_ops.transfer.rsync import RsyncTransfer

        if site is None or not site.ssh_conn_id:
            msg = "rsync transfer needs a site with an ssh_conn_id"
            raise TransferError(msg)
        return RsyncTransfer.from_airflow_connection(site.ssh_conn_id, verify_host_key=site.verify_host_key)
    msg = f"unknown transfer method {method!r}; expected local, rsync or globus"
    raise TransferError(msg)
