"""Globus transfer clients built from Airflow connections (secrets stay in the connection)."""

from __future__ import annotations

from cosmodm_ops.transfer.globus import GlobusTransfer

__all__ = ["globus_transfer_from_connection"]


def globus_transfer_from_connection(conn_id: str) -> GlobusTransfer:
    """A :class:`GlobusTransfer` from a connection whose login is the client id, password the secret."""
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(conn_id)
    if not conn.login or not conn.password:
        msg = f"Airflow connection {conn_id!r} needs the Globus client id (login) and secret (password)"
        raise ValueError(msg)
    return GlobusTransfer.from_client_credentials(conn.login, conn.password)
