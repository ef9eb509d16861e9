"""Choose a transfer implementation from a site's ``transfer.method``.

Kept apart from :mod:`cosmodm_ops.transfer.base` so the interface imports none of its implementations
(which import it): the package's import graph stays acyclic.
"""

from __future__ import annotations

from typing import Any

from cosmodm_ops.transfer.base import Transfer, TransferError

__all__ = ["get_transfer"]


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
