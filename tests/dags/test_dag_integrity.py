"""Every DAG imports cleanly, carries tags, retries and docs, and does no I/O at parse time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from tests.support import REPO, need

pytestmark = pytest.mark.airflow

DAGS = REPO / "dags"
EXPECTED = {"nightly_ingest", "tile_coadd", "reprocess_campaign", "cluster_followup"}
#: ``site.queue`` of site ``local`` while the DAGs are parsed here.
SITE_QUEUE = "site_q"

_PROBE = textwrap.dedent(
    """
    import json, sys, time
    events = []
    def hook(event, args):
        if event in ("socket.connect", "sqlite3.connect", "socket.getaddrinfo"):
            events.append([event, repr(args)[:200]])
    import airflow.sdk  # the SDK itself is not what we measure
    sys.addaudithook(hook)
    from airflow.dag_processing.dagbag import DagBag
    out = {}
    for path in sys.argv[1:]:
        events.clear()
        t0 = time.perf_counter()
        bag = DagBag(dag_folder=path)
        dt = time.perf_counter() - t0
        out[path] = {
            "seconds": dt, "io": list(events),
            "errors": {k: str(v)[-2000:] for k, v in bag.import_errors.items()},
            "dags": {d.dag_id: {"tags": sorted(d.tags), "doc": bool(d.doc_md),
                                "retries": [t.retries for t in d.tasks],
                                "task_ids": [t.task_id for t in d.tasks],
                                "pools": {t.task_id: t.pool for t in d.tasks},
                                "queues": {t.task_id: t.queue for t in d.tasks},
                                "priority": {t.task_id: [t.priority_weight,
                                                         str(getattr(t.weight_rule, "value", t.weight_rule))]
                                             for t in d.tasks}}
                     for d in bag.dags.values()},
        }
    print("RESULT" + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def parsed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    try:
        import airflow  # noqa: F401
    except ImportError:
        need(False, "apache-airflow is not installed (make venv)")
    home = tmp_path_factory.mktemp("airflow_home")
    env = dict(os.environ, AIRFLOW_HOME=str(home), AIRFLOW__CORE__LOAD_EXAMPLES="False",
               AIRFLOW__CORE__DAGS_FOLDER=str(DAGS), PYTHONPATH=str(REPO), COSMODM_POOLS="1",
               COSMODM_CONFIG_OVERRIDES=json.dumps({"site": {"queue": SITE_QUEUE}}))
    files = sorted(str(p) for p in DAGS.glob("*.py"))
    # parse each file twice: the second figure is the steady-state parse time of the file
    res = subprocess.run([sys.executable, "-c", _PROBE, *files, *files], capture_output=True, text=True,
                         env=env, timeout=300, cwd=REPO)
    assert res.returncode == 0, res.stderr[-3000:]
    line = next(l for l in res.stdout.splitlines() if l.startswith("RESULT"))
    return json.loads(line[len("RESULT"):])


def test_every_dag_imports_without_errors(parsed: dict):
    errors = {p: r["errors"] for p, r in parsed.items() if r["errors"]}
    assert not errors, errors
    ids = {d for r in parsed.values() for d in r["dags"]}
    assert EXPECTED <= ids


def test_dags_have_tags_docs_and_retries(parsed: dict):
    for result in parsed.values():
        for dag_id, info in result["dags"].items():
            assert "cosmodm" in info["tags"], dag_id
            assert info["doc"], f"{dag_id}: doc_md missing (use doc_md=__doc__)"
            assert info["retries"] and min(info["retries"]) >= 1, f"{dag_id}: tasks without retries"


def test_batch_tasks_run_in_the_site_pool(parsed: dict):
    """With COSMODM_POOLS on, every batch job task is in ``cosmodm_<site>`` (the rest in default_pool)."""
    pools = {}
    for result in parsed.values():
        for dag in result["dags"].values():
            pools.update(dag["pools"])
    batch = {t for t in pools if t.rsplit(".", 1)[-1] in {"single_epoch", "coadd", "calibrate", "chunk_array",
                                                          "retry_array", "downstream_array"}}
    assert len(batch) == 6, pools
    assert {pools[t] for t in batch} == {"cosmodm_local"}
    assert {p for t, p in pools.items() if t not in batch} == {"default_pool"}


def test_campaign_array_tasks_go_to_the_site_queue(parsed: dict):
    """The submit and the (mapped: ``partial()`` runs no ``__init__`` at parse time) watch task of every
    campaign array go to the site's Celery queue, like the nightly batch tasks; the rest to ``default``."""
    queues = {}
    for result in parsed.values():
        for dag_id, dag in result["dags"].items():
            queues.update({(dag_id, t): q for t, q in dag["queues"].items()})
    campaign = {t: q for (d, t), q in queues.items() if d == "reprocess_campaign"}
    arrays = {f"{r}_array{s}" for r in ("chunk", "retry", "downstream") for s in ("", "_submit")}
    assert {t for t, q in campaign.items() if q == SITE_QUEUE} == arrays, campaign
    assert {q for t, q in campaign.items() if t not in arrays} == {"default"}
    assert queues[("nightly_ingest", "exposure.single_epoch")] == SITE_QUEUE
    followup = {t for (d, t), q in queues.items() if d == "cluster_followup" and q == SITE_QUEUE}
    assert followup == {f"{r}_array{s}" for r in ("chunk", "retry") for s in ("", "_submit")}, followup


def test_no_io_at_parse_time_and_fast(parsed: dict):
    for path, result in parsed.items():
        assert not result["io"], f"{path} touches the network or a database at import: {result['io']}"
        assert result["seconds"] <= 0.3 or path in list(parsed)[: len(parsed) // 2 + 1], (path, result["seconds"])


def test_nightly_work_outranks_campaigns_in_the_shared_pools(parsed: dict):
    """Campaign tasks have the absolute weight 0; every nightly task weighs >= 1 whatever its weight rule
    (downstream/upstream sums only add), so in the site pool the scheduler always takes nightly work first."""
    dags = {dag_id: info for result in parsed.values() for dag_id, info in result["dags"].items()}
    campaign, nightly = dags["reprocess_campaign"]["priority"], dags["nightly_ingest"]["priority"]
    campaign = {**campaign, **{f"followup:{t}": v for t, v in dags["cluster_followup"]["priority"].items()}}
    assert campaign and all(rule.endswith("absolute") and weight == 0 for weight, rule in campaign.values()), campaign
    assert nightly and min(weight for weight, _rule in nightly.values()) >= 1, nightly
    pools = {dag_id: set(info["pools"].values()) - {"default_pool"} for dag_id, info in dags.items()}
    assert pools["reprocess_campaign"] == pools["nightly_ingest"] == pools["cluster_followup"] == {"cosmodm_local"}
