"""The Celery rows of ``make faults``: kill -9 a worker mid-task, the triggerer while jobs are deferred,
the scheduler mid-run. Each against the Celery tier (``tests/fixtures/celery.py``, Redis database 6).

Workload per row: a simulated decam-mini night of its own (2 exposures in g, no clouds) through
``nightly_ingest``, triggered over the REST API. When the run reaches the row's moment, the process is
killed with SIGKILL (its whole process group) and started again. Then:

* survived: the run ends ``success`` with both exposures accepted;
* lost: expected products (per exposure 1 raw + 4 CCD images, weights and masks) missing from the archive;
* duplicated: product keys with more than one current row, superseded revisions of the night, and single-epoch
  jobs that completed more than once for one exposure (a second job for the same work);
* recovery_s: from the kill to the first task instance that succeeded after it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.faults import FaultEnv, FaultResult, fault

__all__ = ["kill_scheduler", "kill_triggerer_while_deferred", "kill_worker_mid_task", "same_night_twice"]

_NIGHTS = {"kill_worker_mid_task": "2026-11-10", "kill_triggerer_while_deferred": "2026-11-11",
           "kill_scheduler": "2026-11-12", "same_night_twice": "2026-11-13"}
_KINDS = ("image", "weight", "mask")
_RUN_TIMEOUT_S = 1500


def _start(env: FaultEnv) -> Any:
    from tests.fixtures.celery import start_demo_tier

    # a killed worker's task is failed (then retried) after this heartbeat timeout instead of 5 min
    return start_demo_tier(env.workdir / "celery", broker_db=6,
                           AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT="60")


def _tier(env: FaultEnv) -> Any:
    af = env.service("celery", _start)
    if not getattr(af, "_faults_ready", False):
        cosmodm = str(Path(sys.executable).parent / "cosmodm")
        subprocess.run([cosmodm, "archive", "init"], env=af.env, check=True, capture_output=True, timeout=300)
        af.wait_for_dag("nightly_ingest", timeout=600)
        af._faults_ready = True
    return af


def _simulate(af: Any, night: str, seed: int) -> None:
    out = Path(af.env["COSMODM_RAW_SOURCE"]) / night
    cosmodm = str(Path(sys.executable).parent / "cosmodm")
    subprocess.run(["nice", "-n", "10", cosmodm, "sim", "night", "--camera", "decam-mini", "--night", night,
                    "--exposures", "2", "--bands", "g", "--cloudy", "0", "--seed", str(seed), "--no-progress",
                    "--out", str(out)], check=True, capture_output=True, timeout=1200)


def _tis(af: Any, run_id: str) -> list[dict[str, Any]]:
    import psycopg2

    conn = psycopg2.connect(af.meta_url.replace("+psycopg2", ""))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT task_id, map_index, state, end_date, try_number FROM task_instance "
                        "WHERE dag_id = 'nightly_ingest' AND run_id = %s", (run_id,))
            return [dict(zip(("task_id", "map_index", "state", "end_date", "try_number"), r, strict=True))
                    for r in cur.fetchall()]
    finally:
        conn.close()


def _kill_and_restart(af: Any, name: str) -> float:
    """SIGKILL the process group of ``name`` (kill -9, no clean shutdown), then start it again."""
    from tests.fixtures.celery import start_worker

    proc = af.procs.pop(name)
    t = time.time()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)
    if name.startswith("worker-"):
        start_worker(af, name.removeprefix("worker-"))
    else:
        af.start(name, [name])
    return t


def _archive_count(af: Any, night: str) -> tuple[int, int]:
    """(lost, duplicated) products of a night in the archive: see the module docstring."""
    from cosmodm_ops.archive import Archive
    from cosmodm_ops.config import load_config

    archive = Archive(af.archive_url, af.env["COSMODM_ARCHIVE_ROOT"])
    current = archive.find(survey="demo", night=night)
    every = archive.find(survey="demo", night=night, include_superseded=True)
    expnums = sorted({p["expnum"] for p in current if p["kind"] == "raw"})
    ccds = [c.ccdnum for c in load_config("demo", site="local").camera.ccds]  # decam-mini: 25, 26, 32, 33
    expected = {("raw", e, None) for e in expnums} | {(k, e, c) for k in _KINDS for e in expnums for c in ccds}
    keys = Counter((p["kind"], p["expnum"], p.get("ccd") if p["kind"] != "raw" else None) for p in current)
    lost = len(expected - set(keys)) + max(0, 2 - len(expnums)) * (1 + len(ccds) * len(_KINDS))
    duplicated = sum(n - 1 for n in keys.values() if n > 1) + (len(every) - len(current))
    return lost, duplicated


def _jobs_done(run_id: str, run_root: Path, exposures: int = 2) -> Counter:
    """Single-epoch jobs of a run that completed (exit 0), per map index (exposure), over every try."""
    from cosmodm_ops.batch.base import job_name_for

    done: Counter = Counter()
    for m in range(exposures):
        for t in range(1, 6):
            rc = run_root / "jobs" / ".cosmodm" / f"{job_name_for('nightly_ingest', run_id, 'exposure.single_epoch', t, m)}.rc"
            if rc.is_file() and rc.read_text().strip() == "0":
                done[m] += 1
    return done


def _count(af: Any, night: str, run_id: str, run_root: Path) -> tuple[int, int]:
    """(lost, duplicated) of a night: products (see the module docstring) and jobs that completed twice."""
    lost, duplicated = _archive_count(af, night)
    duplicated += sum(n - 1 for n in _jobs_done(run_id, run_root).values() if n > 1)
    return lost, duplicated


def _row(env: FaultEnv, name: str, seed: int, moment: str, target: str, ready) -> FaultResult:
    af = _tier(env)
    night = _NIGHTS[name]
    _simulate(af, night, seed)
    run_id = af.trigger("nightly_ingest", {"night": night, "site": "local", "survey": "demo", "version": "v1",
                                           "force": False})
    end = time.time() + _RUN_TIMEOUT_S
    t_kill = None
    while time.time() < end and t_kill is None:
        tis = _tis(af, run_id)
        if ready(tis):
            t_kill = _kill_and_restart(af, target)
            break
        state = af.api("GET", f"/api/v2/dags/nightly_ingest/dagRuns/{run_id}")["state"]
        if state in ("success", "failed"):
            return FaultResult(name, moment, f"the run ended {state} before the moment came", False, -1, -1, None)
        time.sleep(1)
    if t_kill is None:
        return FaultResult(name, moment, "the moment never came", False, -1, -1, None)
    state = af.wait_run("nightly_ingest", run_id, timeout=max(60, end - time.time()))
    tis = _tis(af, run_id)
    after = [t["end_date"].timestamp() for t in tis if t["state"] == "success" and t["end_date"]
             and t["end_date"].timestamp() > t_kill]
    recovery = round(min(after) - t_kill, 1) if after else None
    retried = sorted({t["task_id"] for t in tis if (t["try_number"] or 0) > 1})
    lost, duplicated = _count(af, night, run_id, Path(af.env["COSMODM_WORK_ROOT"]))
    from cosmodm_ops.workflows.nightly import night_counts

    counts = night_counts(night, af.archive_url, af.env["COSMODM_ARCHIVE_ROOT"])
    survived = state == "success" and counts["accepted"] == 2
    action = (f"{target} restarted; run {state}; " + (f"retried: {', '.join(retried)}" if retried else "no retries"))
    note = json.dumps({"counts": {k: counts[k] for k in ("exposures", "accepted", "quarantined", "failed")},
                       "killed_at": dt.datetime.fromtimestamp(t_kill, dt.UTC).isoformat(timespec="seconds")})
    return FaultResult(name, moment, action, survived, lost, duplicated, recovery, note)


def _running(task: str):
    return lambda tis: any(t["task_id"] == task and t["state"] == "running" for t in tis)


@fault("kill_worker_mid_task", tier="celery")
def kill_worker_mid_task(env: FaultEnv) -> FaultResult:
    """kill -9 the ``default`` Celery worker while an exposure's ``register`` task runs on it."""
    return _row(env, "kill_worker_mid_task", 101, "exposure.register running on worker-default",
                "worker-default", _running("exposure.register"))


@fault("kill_triggerer_while_deferred", tier="celery")
def kill_triggerer_while_deferred(env: FaultEnv) -> FaultResult:
    """kill -9 the triggerer while both single-epoch jobs are deferred (watched by it)."""
    return _row(env, "kill_triggerer_while_deferred", 102, "2 single_epoch tasks deferred", "triggerer",
                lambda tis: sum(t["task_id"] == "exposure.single_epoch" and t["state"] == "deferred"
                                for t in tis) >= 2)


@fault("kill_scheduler", tier="celery")
def kill_scheduler(env: FaultEnv) -> FaultResult:
    """kill -9 the scheduler while single-epoch jobs are deferred and others wait to be scheduled."""
    return _row(env, "kill_scheduler", 103, "single_epoch deferred, downstream not yet scheduled", "scheduler",
                lambda tis: any(t["task_id"] == "exposure.single_epoch" and t["state"] == "deferred" for t in tis))


@fault("same_night_twice", tier="celery")
def same_night_twice(env: FaultEnv) -> FaultResult:
    """``nightly_ingest`` triggered twice for the same night at once (max_active_runs=2: both run together)."""
    from cosmodm_ops.workflows.nightly import night_counts

    af = _tier(env)
    night = _NIGHTS["same_night_twice"]
    _simulate(af, night, 104)
    conf = {"night": night, "site": "local", "survey": "demo", "version": "v1", "force": False}
    runs = [af.trigger("nightly_ingest", conf), af.trigger("nightly_ingest", conf)]
    states = [af.wait_run("nightly_ingest", r, timeout=_RUN_TIMEOUT_S) for r in runs]
    root = Path(af.env["COSMODM_WORK_ROOT"])
    lost, duplicated = _archive_count(af, night)
    jobs = [_jobs_done(r, root) for r in runs]
    duplicated += sum(n - 1 for j in jobs for n in j.values() if n > 1)  # a job twice within one run
    counts = night_counts(night, af.archive_url, af.env["COSMODM_ARCHIVE_ROOT"])
    duplicated += max(0, counts["exposures"] - 2)  # exposure rows beyond one per exposure
    survived = states == ["success", "success"] and counts["accepted"] == 2
    ran = [sum(j.values()) for j in jobs]
    action = (f"Celery tier, 2 runs at once: both {'/'.join(states)}; single-epoch jobs completed per run: "
              f"{ran[0]} and {ran[1]}; archive rows one per product (advisory lock per key; same bytes = no-op)")
    note = json.dumps({"runs": runs, "states": states, "jobs_done": [dict(j) for j in jobs],
                       "counts": {k: counts[k] for k in ("exposures", "accepted", "quarantined", "failed")}})
    return FaultResult("same_night_twice", "2 runs of one night triggered together", action, survived, lost,
                       duplicated, None, note)
