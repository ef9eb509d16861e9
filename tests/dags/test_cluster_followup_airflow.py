"""cluster_followup through a real api-server (``airflow standalone``), at the catalogue level.

A simulated field of three clusters and an empty position, plus a candidate far outside the catalogue;
the form's params over the REST API; the three detections answered confirm / reject / unsure through
the HITL REST API (each answered once its step has waited >= 5 s, and again if Airflow 3.3.2's resume
race asks again). Asserted on the archive's rows: the catalogue product's rows equal the decisions and
who gave them, lineage edges to the input catalogue and every picture (four: the null's too), the far candidate listed as
no_coverage in the campaign's result. Before answering, headless Chromium opens each question's Required Actions
page in Airflow's UI and finds its inspection picture shown (downloaded through the survey pages, decoded). A second run with a bad candidate list fails at validate and
creates no campaign.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import fitsio
import pytest
import sqlalchemy as sa

from cosmodm_ops.campaign.rest import HITL_SETTLE_S, AirflowREST
from tests.support import REPO
from tests.support import wait_until as _wait

pytestmark = pytest.mark.airflow
DAG_ID = "cluster_followup"
ANSWERS = {"SIM-CL00": "confirm", "SIM-CL01": "reject", "SIM-CL02": "unsure"}


def _try(func):
    try:
        return func()
    except Exception:  # noqa: BLE001 - polling
        return None


def _pending(api: AirflowREST, run_id: str) -> list[dict]:
    details = _try(lambda: api.hitl_details(DAG_ID, run_id)) or []
    return [d for d in details if d["task_instance"]["task_id"] == "confirm" and not d.get("responded_at")
            and d.get("response_received") is not True]


def _ti(api: AirflowREST, run_id: str, index: int) -> dict:
    return api._request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/confirm/{index}")


def _answer(api: AirflowREST, run_id: str, index: int, name: str) -> None:
    api._request("PATCH", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/confirm/{index}/hitlDetails",
                 {"chosen_options": [ANSWERS[name]], "params_input": {}})


def _answer_all(api: AirflowREST, run_id: str, log: Path, timeout: float = 240) -> dict[int, str]:
    """Answer each mapped question by the candidate in its subject, all at once after every step has waited
    HITL_SETTLE_S (Airflow 3.3.2's resume race); again when a retry asks again."""
    asked: dict[int, str] = {}
    deadline = time.time() + timeout
    while time.time() < deadline:
        todo = {}
        for d in _pending(api, run_id):
            index, name = int(d["task_instance"]["map_index"]), d["subject"].split()[2].rstrip(":")
            if index in asked and int(_ti(api, run_id, index).get("try_number") or 1) <= 1:
                continue
            assert "![inspection picture" in d["body"] and "/cosmodm/product/" in d["body"], d["body"]
            todo[index] = name
        if todo and all(_ti(api, run_id, i).get("state") in ("deferred", "awaiting_input") for i in todo):
            time.sleep(HITL_SETTLE_S)
            for index, name in todo.items():
                _answer(api, run_id, index, name)
            asked.update(todo)
        states = [_ti(api, run_id, i).get("state") for i in asked]
        if len(asked) == len(ANSWERS) and all(s in ("success", "failed") for s in states):
            return asked
        time.sleep(2)
    raise AssertionError(f"HITL steps not all answered: {asked}; log tail:\n{log.read_text()[-3000:]}")


@pytest.fixture
def followup_field(tmp_path: Path) -> dict[str, Path]:
    from cosmodm_ops.clusters.followup import simulate_field

    simulate_field([(0.2, 60), (0.35, 60), (0.5, 70)], 1, 11, tmp_path / "field")
    cands = tmp_path / "field" / "candidates.csv"
    cands.write_text(cands.read_text() + "FAR-01,250.00000,-40.00000,2.0\n")
    (tmp_path / "finder.yaml").write_text("clusters:\n  z_step: 0.01\n  n_boot: 10\n  max_background: 5000\n")
    bad = tmp_path / "bad.csv"
    bad.write_text("NAME,RA,DEC\nA,150.5,2.5\nB,151.0,\n")
    return {"candidates": cands, "catalog": tmp_path / "field" / "catalog.fits", "bad": bad,
            "config": tmp_path / "finder.yaml"}


def _picture_in_required_actions(sa_, browser, run_id: str, pending: list[dict]) -> None:
    """Airflow's Required Actions page of each question shows its inspection picture: the markdown image,
    fetched from the survey pages' download behind the UI's own login, decoded by Chromium (a real PNG)."""
    import urllib.parse

    from tests.fixtures.browser import Watch, login, shot

    password = json.loads((sa_.home / "simple_auth_manager_passwords.json.generated").read_text())["admin"]
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = ctx.new_page()
    login(page, sa_.url, "admin", password)
    watch = Watch(page)
    for d in pending:
        index, name = int(d["task_instance"]["map_index"]), d["subject"].split()[2].rstrip(":")
        page.goto(f"{sa_.url}/dags/{DAG_ID}/runs/{urllib.parse.quote(run_id, safe='')}/tasks/confirm/mapped/"
                  f"{index}/required_actions")
        img = page.locator(f'img[alt="inspection picture of {name}"]')
        img.wait_for(timeout=60000)
        page.wait_for_function("el => el.complete && el.naturalWidth > 0", arg=img.element_handle(), timeout=30000)
        size = img.evaluate("el => [el.naturalWidth, el.naturalHeight]")
        assert size[0] >= 200 and size[1] >= 200, (name, size)
        assert "/cosmodm/download/" in img.get_attribute("src")
        shot(page, f"hitl_{name}")
    assert not watch.problems, "\n".join(watch.problems)
    ctx.close()


def test_followup_with_hitl_decisions_into_the_archive(standalone_factory, followup_field, browser, tmp_path):
    from cosmodm_ops.archive import Archive

    env = {"COSMODM_DB": f"sqlite:///{tmp_path / 'archive' / 'cosmodm.db'}",
           "COSMODM_ARCHIVE_ROOT": str(tmp_path / "archive"), "COSMODM_WORK_ROOT": str(tmp_path / "work"),
           "COSMODM_LOCAL_JOBS": str(tmp_path / "jobs"),
           "COSMODM_CONFIG_OVERRIDES": json.dumps({"site": {"batch": {
               "python": str(Path(sys.executable).parent / "cosmodm")}}})}
    archive = Archive(env["COSMODM_DB"], env["COSMODM_ARCHIVE_ROOT"])
    archive.init()
    dags = tmp_path / "dags"
    dags.mkdir()
    shutil.copy(REPO / "dags" / "cluster_followup.py", dags)
    sa_ = standalone_factory(dags, **env, AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION="False")
    log = sa_.home / "standalone.log"
    api = AirflowREST(sa_.url, sa_.token)
    _wait(lambda: _try(lambda: api._request("GET", f"/api/v2/dags/{DAG_ID}")), 120, "the DAG to be parsed", log)

    conf = {"name": "sim-followup", "candidates": str(followup_field["candidates"]),
            "catalog": [str(followup_field["catalog"])], "min_significance": 5.0,
            "config": str(followup_field["config"]), "site": "local", "chunk_size": 3}
    run_id = api.trigger(DAG_ID, conf)["dag_run_id"]
    bad_run = api.trigger(DAG_ID, {**conf, "candidates": str(followup_field["bad"])})["dag_run_id"]
    _wait(lambda: len(_pending(api, run_id)) == 3, 300, "three confirmation steps", log)
    _picture_in_required_actions(sa_, browser, run_id, _pending(api, run_id))
    asked = _answer_all(api, run_id, log)
    assert sorted(asked.values()) == sorted(ANSWERS)
    state = _wait(lambda: (s := api.dag_run(DAG_ID, run_id)["state"]) in ("success", "failed") and s, 180,
                  "the run to end", log)
    assert state == "success", log.read_text()[-3000:]

    with archive.engine.connect() as conn:
        camp = conn.execute(sa.text("SELECT id, state, stage, params, note FROM campaign WHERE source = :s"),
                            {"s": f"airflow:{run_id}"}).one()
        items = {r.item_key: r for r in conn.execute(sa.text(
            "SELECT item_key, state, decision, decided_by FROM campaign_item WHERE campaign_id = :c"), {"c": camp.id})}
    assert (camp.state, camp.stage) == ("done", "cluster_followup")
    assert "confirmed yes 1, no 1, unsure 1; no_coverage 1, no_warps 0, failed 0" in camp.note, camp.note
    assert {k.split(":")[-1]: (r.state, r.decision, r.decided_by) for k, r in items.items()} == {
        **{n: ("done", a, "admin") for n, a in ANSWERS.items()},
        "SIM-NULL00": ("done", None, None), "FAR-01": ("done", None, None)}
    result = json.loads(camp.params)["result"]
    assert result["no_coverage"] == ["FAR-01"] and result["failed"] == []
    assert sorted(result["to_confirm"]) == sorted(ANSWERS) and result["below_threshold"] == ["SIM-NULL00"]

    cat_rows = archive.find(kind="cluster_catalog", stage="clusters")
    assert len(cat_rows) == 1 and cat_rows[0]["id"] == result["catalogue_product"]
    table = fitsio.read(str(archive.fetch(cat_rows[0]["id"])))
    got = {r["name"].strip(): (r["confirmed"].strip(), r["who_confirmed"].strip(), r["status"].strip()) for r in table}
    assert got == {"SIM-CL00": ("yes", "admin", "ok"), "SIM-CL01": ("no", "admin", "ok"),
                   "SIM-CL02": ("unsure", "admin", "ok"), "SIM-NULL00": ("no", "finder", "ok"),
                   "FAR-01": ("no", "finder", "no_coverage")}
    edges = archive.lineage(cat_rows[0]["id"], depth=1)["edges"]
    pictures = {r["id"] for r in archive.find(kind="inspection", stage="clusters")}
    catalog_input = archive.product(fitsio_sha(followup_field["catalog"]))
    assert len(pictures) == 4  # the three detections and the null (its curve): every ok candidate has one
    assert {e["input_id"] for e in edges} == pictures | {catalog_input["id"]}
    for pid in pictures:
        assert {e["input_id"] for e in archive.lineage(pid, depth=1)["edges"]} == {catalog_input["id"]}
    verdicts = {q["verdict"] for q in archive.qa_results(check_name="cluster_confirmation")}
    assert verdicts == set(ANSWERS.values())

    bad_state = _wait(lambda: (s := api.dag_run(DAG_ID, bad_run)["state"]) in ("success", "failed") and s, 120,
                      "the bad run to end", log)
    tis = {t["task_id"]: t["state"] for t in api.task_instances(DAG_ID, bad_run)}
    assert bad_state == "failed" and tis["validate"] == "failed", tis
    with archive.engine.connect() as conn:  # the bad list created no campaign
        assert conn.execute(sa.text("SELECT count(*) FROM campaign")).scalar_one() == 1


def fitsio_sha(path: Path) -> str:
    from cosmodm_ops.archive.store import sha256_file

    return sha256_file(path)
