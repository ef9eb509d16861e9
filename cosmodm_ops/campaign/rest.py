"""A small client of the Airflow REST API (v2) for campaigns: trigger, follow, answer HITL steps.

No Airflow import (the CLI runs where Airflow is not installed). Where it finds Airflow:

* ``COSMODM_AIRFLOW_URL`` (e.g. ``http://127.0.0.1:8080``), and ``COSMODM_AIRFLOW_TOKEN`` or
  ``COSMODM_AIRFLOW_USER`` + ``COSMODM_AIRFLOW_PASSWORD``; or
* an Airflow Connection in the environment, ``AIRFLOW_CONN_COSMODM_AIRFLOW_API`` (JSON
  ``{"conn_type": "http", "host": ..., "port": ..., "login": ..., "password": ...}``).

Never from a file.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

__all__ = ["HITL_SETTLE_S", "AirflowAPIError", "AirflowREST", "get_token"]

#: Seconds a HITL step must have been waiting before a script answers it (see AirflowREST.answer_hitl).
HITL_SETTLE_S = 5.0


class AirflowAPIError(RuntimeError):
    """The Airflow API could not be reached or refused a call (message: URL, status, detail)."""


def get_token(url: str, user: str, password: str, timeout: float = 30) -> str:
    """A JWT from the api-server's ``POST /auth/token`` (the simple auth manager's and FAB's login)."""
    return AirflowREST(url)._request("POST", "/auth/token", {"username": user, "password": password},
                                     auth=False, timeout=timeout)["access_token"]


@dataclass
class AirflowREST:
    """``url`` of the api-server and a JWT (or login to get one)."""

    url: str
    token: str | None = None
    user: str | None = None
    password: str | None = None

    @classmethod
    def from_env(cls) -> AirflowREST:
        """From ``COSMODM_AIRFLOW_*`` or ``AIRFLOW_CONN_COSMODM_AIRFLOW_API``."""
        url = os.environ.get("COSMODM_AIRFLOW_URL")
        if url:
            return cls(url.rstrip("/"), os.environ.get("COSMODM_AIRFLOW_TOKEN"),
                       os.environ.get("COSMODM_AIRFLOW_USER"), os.environ.get("COSMODM_AIRFLOW_PASSWORD"))
        conn = os.environ.get("AIRFLOW_CONN_COSMODM_AIRFLOW_API")
        if conn:
            try:
                c = json.loads(conn)
            except json.JSONDecodeError as err:
                msg = "AIRFLOW_CONN_COSMODM_AIRFLOW_API: expected the JSON form of a connection"
                raise AirflowAPIError(msg) from err
            scheme = c.get("schema") or "http"
            host = c.get("host", "127.0.0.1")
            if "://" not in host:
                host = f"{scheme}://{host}"
            url = f"{host}:{c['port']}" if c.get("port") else host
            return cls(url.rstrip("/"), None, c.get("login"), c.get("password"))
        msg = ("no Airflow API configured: set COSMODM_AIRFLOW_URL (+ COSMODM_AIRFLOW_TOKEN or _USER/_PASSWORD) "
               "or AIRFLOW_CONN_COSMODM_AIRFLOW_API, or use --local")
        raise AirflowAPIError(msg)

    def _request(self, method: str, path: str, body: Any = None, auth: bool = True, timeout: float = 30) -> Any:
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self._token()}"
        req = urllib.request.Request(f"{self.url}{path}", method=method, headers=headers,
                                     data=json.dumps(body).encode() if body is not None else None)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as err:
            detail = err.read().decode(errors="replace")[:500]
            msg = f"Airflow API {method} {self.url}{path}: HTTP {err.code}: {detail}"
            raise AirflowAPIError(msg) from err
        except OSError as err:
            msg = f"Airflow API {self.url} unreachable ({err}); retry later"
            raise AirflowAPIError(msg) from err

    def _token(self) -> str:
        if not self.token:
            if not (self.user and self.password):
                msg = "Airflow API: no token and no user/password to get one"
                raise AirflowAPIError(msg)
            self.token = get_token(self.url, self.user, self.password)
        return self.token

    def trigger(self, dag_id: str, conf: dict[str, Any], run_id: str | None = None) -> dict[str, Any]:
        """``POST /api/v2/dags/{dag_id}/dagRuns`` with the form's params as ``conf``."""
        body: dict[str, Any] = {"logical_date": None, "conf": conf}
        if run_id:
            body["dag_run_id"] = run_id
        return self._request("POST", f"/api/v2/dags/{dag_id}/dagRuns", body)

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]

    def hitl_details(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """Pending and answered Human-in-the-loop steps of a run."""
        return self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/hitlDetails")["hitl_details"]

    def answer_hitl(self, dag_id: str, run_id: str, task_id: str, options: list[str],
                    params_input: dict[str, Any] | None = None, map_index: int = -1) -> dict[str, Any]:
        """``PATCH .../taskInstances/{task_id}/{map_index}/hitlDetails``: choose options (and params).

        Waits until the step's task instance has been waiting (deferred) for ``HITL_SETTLE_S``: Airflow 3.3.2
        resumes a deferred task before its scheduler has handled the executor event of the run that deferred
        it when an answer comes within about a second, then marks the resumed task ``up_for_retry`` ("finished
        with state success, but the task instance's state attribute is queued") and the retry asks again. A
        person never answers that fast; a script must not either.
        """
        self._wait_deferred(dag_id, run_id, task_id, map_index)
        return self._request("PATCH", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/"
                                      f"{map_index}/hitlDetails",
                             {"chosen_options": options, "params_input": params_input or {}})

    def _wait_deferred(self, dag_id: str, run_id: str, task_id: str, map_index: int, timeout: float = 60.0) -> None:
        """Block until the task instance is deferred (awaiting input), then ``HITL_SETTLE_S`` more."""
        suffix = f"/{map_index}" if map_index >= 0 else ""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ti = self._request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}{suffix}")
            if ti.get("state") in ("deferred", "awaiting_input"):
                break
            time.sleep(0.5)
        time.sleep(HITL_SETTLE_S)
