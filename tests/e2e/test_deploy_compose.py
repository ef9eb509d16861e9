"""`docker compose config` validates deploy/docker-compose.yaml where a Docker engine exists."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from tests.support import REPO

DOCKER = shutil.which("docker")


def _engine() -> bool:
    if DOCKER is None:
        return False
    return subprocess.run([DOCKER, "info"], capture_output=True, timeout=30).returncode == 0


@pytest.mark.skipif(not _engine(), reason="no Docker engine on this machine (docker info fails or docker is "
                                          "not installed): deploy/ is checked by tests/unit/test_deploy.py")
def test_docker_compose_config_accepts_the_file(tmp_path):
    env = dict(os.environ, POSTGRES_PASSWORD="x", COSMODM_DB_PASSWORD="x", AIRFLOW_JWT_SECRET="x",
               AIRFLOW_API_SECRET_KEY="x", AIRFLOW_FERNET_KEY="x")
    res = subprocess.run([DOCKER, "compose", "-f", str(REPO / "deploy" / "docker-compose.yaml"), "config",
                          "--format", "json"], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    services = json.loads(res.stdout)["services"]
    assert {"api-server", "scheduler", "dag-processor", "triggerer", "worker-default"} <= set(services)
