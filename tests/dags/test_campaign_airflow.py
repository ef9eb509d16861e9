"""reprocess_campaign through a real api-server (``airflow standalone``): the form's params over the REST API,
approval and rejection through the HITL REST API, one borderline-QA adjudication answered through the API."""

from __future__ import annotations

import shutil
import time

import pytest
import sqlalchemy as sa

from cosmodm_ops.campaign.rest import AirflowREST
from tests.support import REPO
from tests.support import wait_until as _wait
from tests.unit.campaign_factory import build_survey, survey_env

pytestmark = pytest.mark.airflow
DAG_ID = "reprocess_campaign"


def _pending(api: AirflowREST, run_id: str, task_id: str):
    try:
        details = api.hitl_details(DAG_ID, run_id)
    except Exception:  # noqa: BLE001 - not there yet
        return None
    return next((d for d in details if d["task_instance"]["task_id"] == task_id and not d.get("responded_at")
                 and d.get("response_received") is not True), None)


def _answer(api: AirflowREST, run_id: str, task_id: str, options: list[str], params: dict | None = None,
            timeout: float = 240) -> None:
    """Answer a HITL step, and answer again when it asks again: under load, Airflow 3.3.2's resume race (see
    ``AirflowREST.answer_hitl``) still marks the answered task up_for_retry now and then, and its retry asks
    the same question (a person would simply answer twice)."""
    api.answer_hitl(DAG_ID, run_id, task_id, options, params)
    deadline = time.time() + timeout
    while time.time() < deadline:
        ti = api._request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}")
        if ti.get("state") in ("success", "skipped", "failed", "upstream_failed"):
            return
        if ti.get("state") in ("deferred", "awaiting_input") and int(ti.get("try_number") or 1) > 1 \
                and _pending(api, run_id, task_id):
            api.answer_hitl(DAG_ID, run_id, task_id, options, params)
        time.sleep(2)


def _finished(api: AirflowREST, run_id: str) -> str | None:
    state = api.dag_run(DAG_ID, run_id)["state"]
    return state if state in ("success", "failed") else None


def test_trigger_approve_adjudicate_and_reject_over_the_rest_api(standalone_factory, tmp_path, monkeypatch):
    env = survey_env(tmp_path, monkeypatch)
    archive = build_survey(tmp_path)["archive"]
    dags = tmp_path / "dags"
    dags.mkdir()
    shutil.copy(REPO / "dags" / "reprocess_campaign.py", dags)
    sa_ = standalone_factory(dags, **env, FAKE_SEEING="1.95", AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False")
    log = sa_.home / "standalone.log"
    api = AirflowREST(sa_.url, sa_.token)
    _wait(lambda: _try(lambda: api._request("GET", f"/api/v2/dags/{DAG_ID}")), 120, "the DAG to be parsed", log)

    # 1. the form's params as conf; approve the preview, then accept the borderline items, through the API
    conf = {"name": "thresh-3", "survey": "demo", "stage": "single_epoch", "nights": ["2026-11-23"], "expnums": [901001, 901002],
            "target_version": "v1", "overrides": {"single_epoch.detect_thresh": 3.0}, "chunk_size": 2,
            "site": "local"}
    run_id = api.trigger(DAG_ID, conf)["dag_run_id"]
    hitl = _wait(lambda: _pending(api, run_id, "approve"), 180, "the approval step", log)
    assert "**2** item(s) to run in 1 chunk(s)" in hitl["body"]
    _answer(api, run_id, "approve", ["Approve"])
    hitl = _wait(lambda: _pending(api, run_id, "adjudicate") or _finished(api, run_id), 240,
                 "the adjudication step", log)
    assert isinstance(hitl, dict), (hitl, log.read_text()[-3000:])
    assert "single_epoch:demo:00901001" in hitl["body"]
    _answer(api, run_id, "adjudicate", ["accept"], {"override": {}})
    assert _wait(lambda: _finished(api, run_id), 180, "the run to end", log) == "success"
    with archive.engine.connect() as conn:
        camp = conn.execute(sa.text("SELECT id, state, note FROM campaign WHERE source = :s"),
                            {"s": f"airflow:{run_id}"}).one()
        items = conn.execute(sa.text("SELECT item_key, state, qa_verdict, decision, decided_by FROM campaign_item "
                                     "WHERE campaign_id = :c ORDER BY item_key"), {"c": camp.id}).all()
    assert camp.state == "done" and camp.note.startswith("approved by admin")
    assert [tuple(i[1:]) for i in items] == [("done", "borderline", "accept", "admin")] * 2
    assert len(archive.find(kind="image", night="2026-11-23", include_superseded=True)) == 5  # 2 new revisions
    assert {r["kind"] for r in archive.stale()} == {"coadd"}

    # 2. reject: the campaign ends rejected and nothing is submitted
    run_id = api.trigger(DAG_ID, {**conf, "name": "rejected", "nights": ["2026-11-24"], "expnums": []})["dag_run_id"]
    _wait(lambda: _pending(api, run_id, "approve"), 180, "the second approval step", log)
    _answer(api, run_id, "approve", ["Reject"])
    _wait(lambda: _finished(api, run_id), 120, "the rejected run to end", log)
    tis = {t["task_id"]: t["state"] for t in api.task_instances(DAG_ID, run_id)}
    assert tis["start"] == "skipped" and tis.get("chunk_array") in ("skipped", None), tis
    with archive.engine.connect() as conn:
        camp = conn.execute(sa.text("SELECT id, state FROM campaign WHERE source = :s"),
                            {"s": f"airflow:{run_id}"}).one()
        states = {r[0] for r in conn.execute(sa.text("SELECT state FROM campaign_item WHERE campaign_id = :c"),
                                             {"c": camp.id})}
    assert camp.state == "rejected" and states == {"cancelled"}
    assert len(archive.find(kind="image", night="2026-11-24", include_superseded=True)) == 2  # untouched


def _try(func):
    try:
        return func()
    except Exception:  # noqa: BLE001 - polling
        return None
