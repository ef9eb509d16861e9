"""Local transfer (checksums, idempotency, corruption) and Globus through globus_sdk.testing."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import pytest

from cosmodm_ops.transfer import LocalTransfer, TransferError, TransferItem


def _file(path: Path, data: bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def test_local_transfer_links_verifies_and_is_idempotent(tmp_path: Path):
    sums = {n: _file(tmp_path / "src" / n, n.encode() * 1000) for n in ("a.fits", "b.fits")}
    items = [TransferItem(str(tmp_path / "src" / n), str(tmp_path / "dst" / "x" / n), s) for n, s in sums.items()]
    first = LocalTransfer().run(items)
    assert first["files"] == 2 and first["linked"] + first["copied"] == 2 and first["bytes"] == 12000
    for n, s in sums.items():
        assert hashlib.sha256((tmp_path / "dst" / "x" / n).read_bytes()).hexdigest() == s
    again = LocalTransfer().run(items)
    assert again["bytes"] == 0 and again["files"] == 2
    assert not list((tmp_path / "dst" / "x").glob(".*.part"))


def test_local_transfer_refuses_corrupt_source_and_clobbering(tmp_path: Path):
    s = _file(tmp_path / "src.fits", b"good")
    (tmp_path / "src.fits").write_bytes(b"bad!")
    with pytest.raises(TransferError, match="checksum differs"):
        LocalTransfer().run([TransferItem(str(tmp_path / "src.fits"), str(tmp_path / "d" / "src.fits"), s)])
    assert not (tmp_path / "d" / "src.fits").exists()
    _file(tmp_path / "d2" / "f", b"other")
    with pytest.raises(TransferError, match="different checksum"):
        LocalTransfer().run([TransferItem(str(tmp_path / "src.fits"), str(tmp_path / "d2" / "f"))])
    assert (tmp_path / "d2" / "f").read_bytes() == b"other"
    with pytest.raises(TransferError, match="source file missing"):
        LocalTransfer().run([TransferItem(str(tmp_path / "nope"), str(tmp_path / "d3" / "nope"))])


# --------------------------------------------------------------------------- Globus (SDK testing responses)
responses = pytest.importorskip("responses")
TASK = str(uuid.UUID(int=7))
BASE = "https://transfer.api.globus.org/v0.10"


@pytest.fixture
def globus():
    import globus_sdk
    from globus_sdk.testing import load_response

    from cosmodm_ops.transfer.globus import GlobusTransfer

    responses.start()  # globus_sdk.testing registers on responses' default mock
    try:
        load_response(globus_sdk.TransferClient.get_submission_id)
        load_response(globus_sdk.TransferClient.submit_transfer)
        load_response(globus_sdk.TransferClient.cancel_task)
        client = globus_sdk.TransferClient(authorizer=globus_sdk.AccessTokenAuthorizer("not-a-real-token"))
        yield responses, GlobusTransfer(client)
    finally:
        responses.stop()
        responses.reset()


def _task(mock, status: str, **extra):
    body = {"DATA_TYPE": "task", "task_id": TASK, "status": status, "files_transferred": 2,
            "bytes_transferred": 2048, "faults": 0, "nice_status_short_description": status.lower(), **extra}
    mock.add(responses.GET, f"{BASE}/task/{TASK}", json=body)


def test_globus_submit_uses_checksum_sync_and_verification(globus):
    import globus_sdk.testing as gt

    mock, transfer = globus
    task_id = transfer.submit([TransferItem("/raw/a.fits.fz", "/site/a.fits.fz", "ab" * 32)],
                              source="src-ep", dest="dst-ep", deadline_min=60, label="night 2026-11-23")
    assert task_id
    body = json.loads(gt.get_last_request().body)
    assert body["sync_level"] in (3, "checksum") and body["verify_checksum"] is True and body["deadline"]
    item = body["DATA"][0]
    assert item["external_checksum"] == "ab" * 32 and item["checksum_algorithm"] == "SHA256"
    assert mock is not None


def test_globus_active_then_succeeded(globus):
    mock, transfer = globus
    _task(mock, "ACTIVE")
    assert transfer.status(TASK)["done"] is False
    mock.replace(responses.GET, f"{BASE}/task/{TASK}", json={"task_id": TASK, "status": "SUCCEEDED", "faults": 0,
                                                             "files_transferred": 2, "bytes_transferred": 2048})
    st = transfer.status(TASK)
    assert st["done"] and st["status"] == "SUCCEEDED" and st["bytes"] == 2048


def test_globus_failure_surfaces_fault_events(globus):
    mock, transfer = globus
    _task(mock, "FAILED", faults=3)
    mock.add(responses.GET, f"{BASE}/task/{TASK}/event_list", json={"DATA_TYPE": "event_list", "DATA": [
        {"DATA_TYPE": "event", "code": "PERMISSION_DENIED", "is_error": True, "description": "no write access",
         "details": "", "time": "2026-11-24T00:00:00"},
        {"DATA_TYPE": "event", "code": "STARTED", "is_error": False, "description": "started", "details": "",
         "time": "2026-11-24T00:00:00"}], "limit": 10, "offset": 0, "total": 2, "has_next_page": False})
    st = transfer.status(TASK)
    assert st["done"] and st["status"] == "FAILED" and st["events"] == ["PERMISSION_DENIED: no write access"]


def test_globus_deadline_passed(globus):
    mock, transfer = globus
    _task(mock, "FAILED", nice_status="DEADLINE_EXCEEDED", fatal_error={"code": "DEADLINE_EXCEEDED",
                                                                        "description": "deadline"})
    mock.add(responses.GET, f"{BASE}/task/{TASK}/event_list", json={"DATA_TYPE": "event_list", "DATA": [],
                                                                     "limit": 10, "offset": 0, "total": 0})
    st = transfer.status(TASK)
    assert st["done"] and st["message"] == "deadline passed"
