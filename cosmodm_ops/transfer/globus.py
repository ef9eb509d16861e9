"""Globus transfers (globus-sdk v4): checksum-synchronised, verified, with a deadline.

Client credentials come from an Airflow connection (login = client id, password = secret)
and are never logged. ``status`` maps a task document to a small dict the trigger yields,
with fault events surfaced from the task's event list.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from cosmodm_ops.transfer.base import Transfer, TransferError, TransferItem

__all__ = ["GlobusTransfer"]


class GlobusTransfer(Transfer):
    """Submit, poll and cancel Globus transfer tasks.

    Parameters
    ----------
    client : globus_sdk.TransferClient
        An authenticated client (see :meth:`from_client_credentials`).
    """

    method = "globus"

    def __init__(self, client: Any) -> None:
        self.client = client

    @classmethod
    def from_client_credentials(cls, client_id: str, client_secret: str, app_name: str = "cosmodm-ops") -> GlobusTransfer:
        import globus_sdk

        app = globus_sdk.ClientApp(app_name, client_id=client_id, client_secret=client_secret)
        return cls(globus_sdk.TransferClient(app=app))

    def submit(self, items: list[TransferItem], *, source: str | None, dest: str | None, deadline_min: int = 240,
               label: str = "cosmodm") -> str:
        """Submit one task for all items; returns the task id."""
        import globus_sdk

        if not source or not dest:
            raise TransferError("Globus transfer needs site.transfer.source_endpoint and dest_endpoint")
        deadline = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=deadline_min)
        data = globus_sdk.TransferData(source, dest, label=label, sync_level="checksum", verify_checksum=True,
                                       deadline=deadline.isoformat())
        for item in items:
            kw = {"external_checksum": item.sha256, "checksum_algorithm": "SHA256"} if item.sha256 else {}
            data.add_item(item.src, item.dst, **kw)
        try:
            return str(self.client.submit_transfer(data)["task_id"])
        except globus_sdk.GlobusAPIError as err:
            raise TransferError(f"Globus refused the transfer: {err.code}: {err.message}") from err

    def status(self, task_id: str) -> dict[str, Any]:
        """``{"task_id", "status", "done", "files", "bytes", "faults", "message"}`` of a task."""
        task = self.client.get_task(task_id)
        status = task["status"]
        out = {"task_id": task_id, "status": status, "done": status in ("SUCCEEDED", "FAILED"),
               "files": task.get("files_transferred"), "bytes": task.get("bytes_transferred"),
               "faults": task.get("faults", 0), "message": task.get("nice_status_short_description")}
        if status == "FAILED" or task.get("faults"):
            events = self.client.task_event_list(task_id)
            out["events"] = [f"{e['code']}: {e.get('description', '')}" for e in events if e.get("is_error")][:20]
        if status == "FAILED" and task.get("nice_status") == "DEADLINE_EXCEEDED" or \
                task.get("fatal_error", {}) and task.get("fatal_error", {}).get("code") == "DEADLINE_EXCEEDED":
            out["message"] = "deadline passed"
        return out

    def cancel(self, task_id: str) -> None:
        """Cancel a task (on kill)."""
        self.client.cancel_task(task_id)

    def run(self, items: list[TransferItem]) -> dict[str, Any]:  # pragma: no cover - deferred in Airflow
        raise TransferError("Globus transfers are asynchronous: use submit/status (TransferOperator defers)")
