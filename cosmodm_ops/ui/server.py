"""Start a real Airflow api-server with the survey plugin on an archive (``make ui``, the browser tests, the bench).

It runs the ``airflow`` command in a private home (SimpleAuthManager with an ``admin`` and a
``viewer`` user whose passwords are written beforehand, a known JWT secret so tests can forge
and expire tokens, the repo's DAGs and plugin) and stops it by its process group. No Airflow import.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["ApiServer", "free_port", "start_api_server", "token"]

REPO = Path(__file__).resolve().parents[2]
USERS = {"admin": "admin", "viewer": "viewer"}


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ApiServer:
    """A running api-server: its URL, users' passwords, JWT secret and process."""

    url: str
    home: Path
    proc: subprocess.Popen
    passwords: dict[str, str]
    jwt_secret: str
    env: dict[str, str] = field(repr=False, default_factory=dict)

    def stop(self) -> None:
        """Stop the server's process group (SIGTERM, then SIGKILL after 20 s)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def _env(home: Path, port: int, db: str, root: str, secret: str, extra: dict[str, str] | None) -> dict[str, str]:
    venv_bin = Path(sys.executable).parent
    env = dict(os.environ)
    env.update({
        "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:{u}" for u in USERS),
        "AIRFLOW__API_AUTH__JWT_SECRET": secret, "AIRFLOW__API__PORT": str(port), "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}", "AIRFLOW__API__WORKERS": env.get("COSMODM_UI_WORKERS", "2"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": env.get("COSMODM_UI_AIRFLOW_DB", f"sqlite:///{home / 'airflow.db'}"),
        "COSMODM_DB": db, "COSMODM_ARCHIVE_ROOT": root, "PYTHONPATH": str(REPO),
        "PATH": f"{venv_bin}{os.pathsep}{env.get('PATH', '')}",
    })
    env.update(extra or {})
    return env


def start_api_server(home: str | Path, *, db: str, root: str, port: int | None = None, timeout: float = 120,
                     env_extra: dict[str, str] | None = None) -> ApiServer:
    """Migrate a private Airflow metadata DB, then start ``airflow api-server``; wait until it answers."""
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    secret = os.urandom(64).hex()  # HS512 wants >= 64 bytes
    pw_file = home / "simple_auth_manager_passwords.json.generated"
    pw_file.write_text(json.dumps(USERS))
    env = _env(home, port, db, root, secret, env_extra)
    airflow = str(Path(sys.executable).parent / "airflow")
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, cwd=REPO, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    log = open(home / "api-server.log", "w")  # noqa: SIM115 - the child writes it until stopped
    proc = subprocess.Popen([airflow, "api-server"], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    server = ApiServer(url, home, proc, dict(USERS), secret, env)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            msg = f"airflow api-server exited: {(home / 'api-server.log').read_text()[-3000:]}"
            raise RuntimeError(msg)
        try:
            with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=3):
                return server
        except (OSError, urllib.error.HTTPError):
            time.sleep(0.5)
    server.stop()
    msg = f"airflow api-server not answering after {timeout} s; log tail:\n{(home / 'api-server.log').read_text()[-3000:]}"
    raise RuntimeError(msg)


def token(url: str, user: str, password: str) -> str:
    """A JWT from ``POST /auth/token`` (:func:`cosmodm_ops.campaign.rest.get_token`)."""
    from cosmodm_ops.campaign.rest import get_token

    return get_token(url, user, password)
