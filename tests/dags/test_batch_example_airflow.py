"""The Airflow layer through Airflow itself: ``airflow dags test`` and a standalone run over the REST API."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.fixtures.airflow import VENV_BIN, airflow_env
from tests.support import REPO

pytestmark = pytest.mark.airflow

EXAMPLES = REPO / "tests" / "dags" / "example_dags"


def _xcom(home: Path, task_id: str, key: str = "return_value") -> object:
    with sqlite3.connect(home / "airflow.db") as db:
        row = db.execute("SELECT value FROM xcom WHERE dag_id='batch_example' AND task_id=? AND key=? "
                         "ORDER BY timestamp DESC LIMIT 1", (task_id, key)).fetchone()
    assert row is not None, f"no XCom {key} for {task_id}"
    value = row[0]
    return json.loads(value) if isinstance(value, (str, bytes)) else value


def test_dags_test_runs_transfer_and_batch_job(airflow_available, tmp_path: Path):
    home = tmp_path / "home"
    home.mkdir()
    src = tmp_path / "src.bin"
    src.write_bytes(b"cosmodm" * 1000)
    dst = tmp_path / "site" / "input" / "src.bin"
    env = airflow_env(home, EXAMPLES, COSMODM_TEST_SRC=str(src), COSMODM_TEST_DST=str(dst),
                      COSMODM_TEST_SLEEP="1", COSMODM_WORK_ROOT=str(tmp_path / "work"))
    subprocess.run([str(VENV_BIN / "airflow"), "db", "migrate"], env=env, check=True, capture_output=True,
                   timeout=300)
    res = subprocess.run([str(VENV_BIN / "airflow"), "dags", "test", "batch_example"], env=env,
                         capture_output=True, text=True, timeout=300, cwd=REPO)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert hashlib.sha256(dst.read_bytes()).hexdigest() == hashlib.sha256(src.read_bytes()).hexdigest()
    acc = _xcom(home, "job")
    assert acc["state"] == "completed" and acc["exit_code"] == 0 and acc["site"] == "local"
    moved = _xcom(home, "transfer")
    assert moved["files"] == 1 and moved["bytes"] == 7000
    out = list((tmp_path / "work" / "jobs" / ".cosmodm").glob("*.out"))
    assert any("hello from the job" in p.read_text() for p in out)


def test_standalone_shows_the_job_deferred_then_success(standalone_factory, tmp_path: Path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"x" * 100)
    from cosmodm_ops.archive import Archive

    db, root = f"sqlite:///{tmp_path / 'archive.db'}", str(tmp_path / "archive")
    Archive(db, root).init()
    sa = standalone_factory(EXAMPLES, COSMODM_TEST_SRC=str(src), COSMODM_TEST_DST=str(tmp_path / "dst.bin"),
                            COSMODM_TEST_SLEEP="20", COSMODM_WORK_ROOT=str(tmp_path / "work"),
                            COSMODM_DB=db, COSMODM_ARCHIVE_ROOT=root, COSMODM_POOLS="1")
    # the site's pool, as `cosmodm config pools` describes it (created before the DAG is unpaused)
    from cosmodm_ops.config.cli import pools

    (name, pool), = pools(["local"]).items()
    sa.api("POST", "/api/v2/pools", {"name": name, **pool})
    # the CosmoDM pages sit behind Airflow's authentication
    import urllib.error
    import urllib.request

    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(f"{sa.url}/cosmodm/", timeout=10)
    assert denied.value.code == 401
    req = urllib.request.Request(f"{sa.url}/cosmodm/products?survey=demo",
                                 headers={"Authorization": f"Bearer {sa.token}"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert json.loads(resp.read()) == []
    for _ in range(60):  # the DAG processor needs a moment to serialize the new file
        try:
            sa.api("PATCH", "/api/v2/dags/batch_example", {"is_paused": False})
            break
        except OSError:
            time.sleep(2)
    run = sa.api("POST", "/api/v2/dags/batch_example/dagRuns", {"logical_date": None, "conf": {}})
    run_id = run["dag_run_id"]
    seen = set()
    pool_deferred = set()
    deadline = time.time() + 180
    state = None
    while time.time() < deadline:
        ti = sa.api("GET", f"/api/v2/dags/batch_example/dagRuns/{run_id}/taskInstances/job")
        seen.add(ti.get("state"))
        pool_deferred.add(sa.api("GET", f"/api/v2/pools/{name}")["deferred_slots"])
        dr = sa.api("GET", f"/api/v2/dags/batch_example/dagRuns/{run_id}")
        state = dr["state"]
        if state in ("success", "failed"):
            break
        time.sleep(1)
    assert "deferred" in seen, seen
    assert ti["pool"] == "cosmodm_local" and 1 in pool_deferred, pool_deferred  # the deferred job held a slot
    assert state == "success", (state, seen, (sa.home / "standalone.log").read_text()[-3000:])
