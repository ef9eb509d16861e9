"""deploy/: the compose file's shape (services, one worker per site queue) and the Helm values' executor."""

from __future__ import annotations

import yaml

from cosmodm_ops.config import available, site_queue
from tests.support import REPO

DEPLOY = REPO / "deploy"
AIRFLOW_SERVICES = {"api-server", "scheduler", "dag-processor", "triggerer"}


def _compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yaml").read_text())


def _queues(service: dict) -> set[str]:
    cmd = service.get("command") or []
    return set(cmd[cmd.index("--queues") + 1].split(",")) if "--queues" in cmd else set()


def test_compose_has_the_services_a_site_runs():
    services = _compose()["services"]
    assert {"redis", "postgres", "airflow-init"} | AIRFLOW_SERVICES <= set(services)
    for name in AIRFLOW_SERVICES:
        assert services[name]["command"] == [name]
        assert services[name]["build"]["dockerfile"] == "Dockerfile"
        env = services[name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:6379/")
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
    context = (DEPLOY / services["api-server"]["build"]["context"]).resolve()
    assert context == REPO.resolve() and (context / "Dockerfile").is_file()


def test_one_worker_per_site_queue_and_one_for_default():
    services = _compose()["services"]
    workers = {n: s for n, s in services.items() if (s.get("command") or [None])[:2] == ["celery", "worker"]}
    served = [_queues(s) for s in workers.values()]
    assert all(len(q) == 1 for q in served), served  # one queue per worker: a site's work stays on its workers
    site_queues = {q for site in available("sites") if (q := site_queue(site))}
    assert site_queues, "at least one site config names a queue"
    assert set().union(*served) == site_queues | {"default"}


def test_no_secret_in_the_compose_file():
    text = (DEPLOY / "docker-compose.yaml").read_text()
    env = _compose()["x-airflow-common"]["environment"]
    for key in ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API__SECRET_KEY"):
        assert env[key].startswith("${") and ":?" in env[key], key
    assert "password=" not in text.lower()


def test_helm_values_use_celery_and_serve_the_site_queues():
    values = yaml.safe_load((DEPLOY / "values-cosmodm.yaml").read_text())
    assert values["executor"] == "CeleryExecutor" and values["redis"]["enabled"] is True
    assert values["dagProcessor"]["enabled"] and values["triggerer"]["enabled"]
    args = " ".join(values["workers"]["args"])
    queues = set(args.split("--queues", 1)[1].split()[0].split(","))
    assert queues == {q for site in available("sites") if (q := site_queue(site))} | {"default"}
