"""``make demo-campaign``: reprocess the demo night with a changed detection threshold, through Airflow's REST API.

After ``make demo`` (its archive, work folders and Airflow home under ``var/demo``):

1. start the Airflow api-server with a scheduler and a DAG processor (``airflow standalone``) in the demo's
   ``AIRFLOW_HOME``, on a free loopback port;
2. trigger ``reprocess_campaign`` over ``POST /api/v2/dags/reprocess_campaign/dagRuns`` with the form's fields:
   stage ``single_epoch``, the demo night, target version ``v1``, override ``single_epoch.detect_thresh``;
3. approve the impact preview through the HITL REST API (``PATCH .../taskInstances/approve/-1/hitlDetails``),
   and accept any borderline-QA adjudication the same way (printing each call);
4. stop what it started and print one JSON line ``{"campaign", "state", "items", "done", "failed", "skipped",
   "superseded", "stale_downstream", "core_hours_estimated", "core_hours_used"}``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from cosmodm_ops.demo import NIGHT, REPO, VAR, demo_env

DAG_ID = "reprocess_campaign"
THRESH = float(os.environ.get("COSMODM_DEMO_DETECT_THRESH", "3.0"))


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(env: dict[str, str]) -> tuple[subprocess.Popen, str, str]:
    """``airflow standalone`` in the demo's home; returns (process, base URL, admin password)."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env.update({"AIRFLOW__API__PORT": str(port), "AIRFLOW__API__HOST": "127.0.0.1", "AIRFLOW__API__BASE_URL": url,
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5"})
    home = Path(env["AIRFLOW_HOME"])
    log = open(home / "demo-campaign-standalone.log", "w")  # noqa: SIM115 - the child writes it until stopped
    proc = subprocess.Popen([str(Path(sys.executable).parent / "airflow"), "standalone"], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO)
    _say(f"started airflow standalone (pid {proc.pid}) on {url}; log {log.name}")
    pw_file = home / "simple_auth_manager_passwords.json.generated"
    deadline = time.time() + 600
    while time.time() < deadline:
        if proc.poll() is not None:
            msg = f"airflow standalone exited; see {log.name}"
            raise RuntimeError(msg)
        try:
            with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=3) as r:
                if json.loads(r.read()).get("scheduler", {}).get("status") == "healthy" and pw_file.exists():
                    return proc, url, json.loads(pw_file.read_text())["admin"]
        except OSError:
            pass
        time.sleep(2)
    _stop(proc)
    msg = f"airflow standalone not healthy after 600 s; see {log.name}"
    raise RuntimeError(msg)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    _say(f"stopped airflow standalone (pid {proc.pid})")


def _pending(api, run_id: str) -> dict | None:
    try:
        details = api.hitl_details(DAG_ID, run_id)
    except Exception:  # noqa: BLE001 - the run has no HITL step yet
        return None
    return next((d for d in details if not d.get("responded_at") and d.get("response_received") is not True), None)


def _drive(api, run_id: str, timeout: float = 5400) -> str:
    """Answer the run's HITL steps (approve, accept) until it ends; returns the run state."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        state = api.dag_run(DAG_ID, run_id)["state"]
        if state in ("success", "failed"):
            return state
        step = _pending(api, run_id)
        if step is not None:
            task_id = step["task_instance"]["task_id"]
            choice = {"approve": "Approve", "adjudicate": "accept", "continue_or_abort": "continue"}.get(task_id)
            if choice:
                _say(f"answering HITL step {task_id!r} through the REST API: PATCH {api.url}/api/v2/dags/{DAG_ID}/"
                     f"dagRuns/{run_id}/taskInstances/{task_id}/-1/hitlDetails {{\"chosen_options\": [\"{choice}\"]}}")
                if task_id == "approve":
                    _say(step.get("body") or "")
                api.answer_hitl(DAG_ID, run_id, task_id, [choice], {"override": {}} if task_id == "adjudicate" else {})
        time.sleep(3)
    return "timeout"


def main() -> int:
    from cosmodm_ops.campaign.rest import AirflowREST

    env = demo_env()
    db = env["COSMODM_DB"]
    if not (VAR / "archive" / "cosmodm.db").exists():
        _say("no demo archive: run `make demo` first")
        return 2
    proc, url, password = _start(env)
    try:
        api = AirflowREST(url, user="admin", password=password)
        for _ in range(120):  # the DAG processor serializes the DAG files first
            try:
                api._request("GET", f"/api/v2/dags/{DAG_ID}")
                break
            except Exception:  # noqa: BLE001 - not yet
                time.sleep(2)
        conf = {"name": f"demo-detect-thresh-{THRESH:g}", "survey": "demo", "stage": "single_epoch",
                "nights": [NIGHT], "target_version": "v1", "overrides": {"single_epoch.detect_thresh": THRESH},
                "site": "local", "chunk_size": 5, "max_retries": 1,
                "description": "make demo-campaign: the demo night with a changed detection threshold"}
        run = api.trigger(DAG_ID, conf)
        _say(f"triggered {DAG_ID} over the REST API: POST {url}/api/v2/dags/{DAG_ID}/dagRuns conf={json.dumps(conf)}"
             f" -> run {run['dag_run_id']}")
        state = _drive(api, run["dag_run_id"])
        _say(f"run {run['dag_run_id']}: {state}")
    finally:
        _stop(proc)
    from cosmodm_ops.archive import Archive
    from cosmodm_ops.campaign import CampaignStore
    from cosmodm_ops.workflows.campaign import campaign_summary

    archive = Archive(db, env["COSMODM_ARCHIVE_ROOT"])
    rows = [r for r in CampaignStore(archive).list() if r["name"] == conf["name"]]
    if not rows:
        _say("no campaign was created: see the run's validate/plan task logs")
        return 1
    os.environ.update({k: env[k] for k in ("COSMODM_DB", "COSMODM_ARCHIVE_ROOT", "COSMODM_WORK_ROOT")})
    summary = campaign_summary(int(rows[0]["id"]))
    keys = ("campaign", "state", "items", "done", "failed", "skipped", "superseded", "stale_downstream",
            "core_hours_estimated", "core_hours_used")
    print(json.dumps({k: summary[k] for k in keys}))
    return 0 if state == "success" else 1


if __name__ == "__main__":
    sys.exit(main())
