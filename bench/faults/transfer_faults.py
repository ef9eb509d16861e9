"""The Globus row of ``make faults``: a transfer task that fails, then the retry.

The Globus cloud is not reachable here: the Globus Transfer API answers from ``globus_sdk.testing``'s
registered responses (submission id, submit) and ones registered here for the task document and its
event list, in order: ACTIVE, FAILED (3 faults, PERMISSION_DENIED), then SUCCEEDED for the retry. The
platform's code runs unchanged: ``GlobusTransfer.submit`` / ``status`` (what ``TransferTrigger`` polls) and
``TransferOperator.execute_complete`` deciding retry or success. Counted from the requests the platform sent:

* lost: items of the night missing from the retry's submission (the last task must carry every file);
* duplicated: submissions that could copy a file twice (no ``sync_level`` checksum, so a file the failed
  task already delivered would be sent again), plus successful tasks beyond one.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from bench.faults import FaultEnv, FaultResult, fault

__all__ = ["globus_task_fails"]

_BASE = "https://transfer.api.globus.org/v0.10"


def _task_doc(task_id: str, status: str, **extra: Any) -> dict[str, Any]:
    return {"DATA_TYPE": "task", "task_id": task_id, "status": status, "files_transferred": 1 if status != "SUCCEEDED"
            else 2, "bytes_transferred": 4096, "faults": 0, "nice_status_short_description": status.lower(), **extra}


def _events() -> dict[str, Any]:
    return {"DATA_TYPE": "event_list", "limit": 10, "offset": 0, "total": 1, "has_next_page": False, "DATA": [
        {"DATA_TYPE": "event", "code": "PERMISSION_DENIED", "is_error": True, "details": "",
         "description": "no write access to /site/raw", "time": "2026-11-24T00:00:00"}]}


def _poll(transfer: Any, task_id: str) -> dict[str, Any]:
    """``TransferTrigger.run``'s loop (status until done), without its sleep."""
    while True:
        status = transfer.status(task_id)
        if status["done"]:
            return status


@fault("globus_task_fails", tier="globus")
def globus_task_fails(env: FaultEnv) -> FaultResult:
    """A Globus task ends FAILED (permission denied after 1 of 2 files); the task retries with a new submission."""
    import globus_sdk
    import responses
    from airflow.sdk.exceptions import AirflowException
    from globus_sdk.testing import load_response

    from cosmodm_ops.airflow.operators import TransferOperator
    from cosmodm_ops.transfer import TransferItem
    from cosmodm_ops.transfer.globus import GlobusTransfer

    items = [TransferItem(f"/raw/2026-11-24/c4d_{i}.fits.fz", f"/site/raw/c4d_{i}.fits.fz", f"{i:02d}" * 32)
             for i in range(2)]
    op = TransferOperator(task_id="transfer", items=[], site="local")
    responses.start()
    try:
        load_response(globus_sdk.TransferClient.get_submission_id)
        task_id = str(load_response(globus_sdk.TransferClient.submit_transfer).metadata.get("task_id")
                      or uuid.UUID(int=7))
        responses.add(responses.GET, f"{_BASE}/task/{task_id}", json=_task_doc(task_id, "ACTIVE"))
        responses.add(responses.GET, f"{_BASE}/task/{task_id}", json=_task_doc(task_id, "FAILED", faults=3))
        responses.add(responses.GET, f"{_BASE}/task/{task_id}/event_list", json=_events())
        client = globus_sdk.TransferClient(authorizer=globus_sdk.AccessTokenAuthorizer("not-a-real-token"))
        transfer = GlobusTransfer(client)
        outcomes = []
        t_fail = recovery = None
        for attempt in (1, 2):
            tid = transfer.submit(items, source="src-ep", dest="dst-ep", deadline_min=60, label=f"faults try {attempt}")
            if attempt == 2:  # the task document of the retry's task
                responses.replace(responses.GET, f"{_BASE}/task/{tid}", json=_task_doc(tid, "SUCCEEDED"))
            status = _poll(transfer, tid)
            try:
                op.execute_complete({}, status)
            except AirflowException as err:
                outcomes.append(f"try {attempt}: {status['status']} {status.get('events')} -> retry")
                t_fail = time.time()
                note_err = str(err)[:160]
                continue
            outcomes.append(f"try {attempt}: {status['status']} -> success")
            recovery = time.time() - t_fail if t_fail else None
            break
        subs = [json.loads(c.request.body) for c in responses.calls
                if c.request.method == "POST" and c.request.url.endswith("/transfer")]
        sub_ids = [c for c in responses.calls if "submission_id" in c.request.url]
    finally:
        responses.stop()
        responses.reset()
    last = subs[-1] if subs else {"DATA": []}
    lost = len({i.dst for i in items} - {d["destination_path"] for d in last.get("DATA", [])})
    unsafe = sum(1 for s in subs if s.get("sync_level") not in (3, "checksum") or not s.get("verify_checksum"))
    succeeded = sum("success" in o for o in outcomes)
    duplicated = unsafe + max(0, succeeded - 1)
    survived = succeeded == 1 and len(subs) == 2 and len(sub_ids) == 2 and "PERMISSION_DENIED" in note_err
    action = ("transfer layer + TransferOperator on recorded Globus responses: FAILED task (events surfaced: "
              "PERMISSION_DENIED) -> AirflowException, retried; the retry submitted every file again with "
              "sync_level=checksum + verify_checksum (the delivered file is not copied twice), a new submission id per try")
    note = {"outcomes": outcomes, "submissions": len(subs), "submission_id_requests": len(sub_ids),
            "error": note_err if t_fail else None}
    return FaultResult("globus_task_fails", "Globus task FAILED after 1 of 2 files", action, survived, lost,
                       duplicated, None if recovery is None else round(recovery, 2), json.dumps(note))
