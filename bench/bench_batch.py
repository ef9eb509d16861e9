"""Watching many Slurm jobs over SSH: our shared poller vs providers-ssh's per-job trigger (the anchor).

``python -m bench batch`` (or ``python -m bench.bench_batch --jobs 500 --sleep 120``) starts the
same private sshd (sshd's DEFAULT ``MaxStartups 10:30:100``) and one-node Slurm with accounting
as the ``ssh``/``slurm`` test tiers (``tests/fixtures/services.py``; root needed), then runs two
phases on the same machine in the same run, each with N concurrent ``sleep`` jobs:

ours
    Submission through ONE :class:`~cosmodm_ops.batch.ssh.SSHRunner` (``SlurmScheduler.submit``,
    idempotent lookup included); N :class:`~cosmodm_ops.airflow.triggers.BatchJobTrigger` in one
    "triggerer" process, sharing one :class:`SitePoller` (one batched ``sacct`` per interval)
    over one :class:`AsyncSSHRunner` connection.
anchor
    providers-ssh's ``SSHRemoteJobOperator`` pattern: every job submitted over its OWN SSH login
    (the operator's ``execute``), its command wrapped to write an exit-code file like the
    provider's wrapper, and watched by the REAL ``SSHRemoteJobTrigger`` (one connection per job,
    two remote commands per poll: exit-code check and log size, every 5 s).

``--array-size C`` submits ours as ceil(N/C) job arrays (one ``ArrayJobTrigger`` each, as the
``ArrayJobOperator`` does); ``--anchor-jobs M`` runs the anchor on M jobs. The cluster is the fixture's with
``JobAcctGatherFrequency=task=0`` (``--acct-frequency``) and ``default_queue_depth=1000`` (see
:func:`light_cluster`): at 500 jobs the per-second sampling saturated slurmd, and slurmctld started only 100
jobs per pass. Each watcher stops after ``sleep x 4 + 600`` s and reports what it noticed.

Jobs queue in a DOWN partition that comes UP once the watchers run, so all N start together
(no busy waiting); each writes its end time, so "job end -> noticed" is measured on one clock. The triggerer runs as a separate
process per phase (its RSS and CPU are its own). Printed per phase: SSH logins (sshd log), sshd
drops ("past MaxStartups"), remote commands (counted in the triggerer), commands/s and per job,
triggerer RSS (baseline and peak) and CPU seconds, worst event-loop stall, end -> noticed
latency (median, p95, max), the last job's end -> the last notice (also over one poll interval) and
makespan over the ideal ``--sleep`` seconds. Each phase prints its JSON line ``{"phase": ...}`` when done.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pwd
import resource
import secrets
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CONN_OURS = "bench_batch_ssh"
CONN_ANCHOR = "bench_batch_anchor"


# --------------------------------------------------------------------------- the triggerer side
def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


async def _lag_monitor(stop: asyncio.Event, out: list[float]) -> None:
    """Worst delay of a 0.1 s sleep: how long the event loop was blocked."""
    while not stop.is_set():
        t = time.perf_counter()
        await asyncio.sleep(0.1)
        out.append(time.perf_counter() - t - 0.1)


async def _watch(spec: dict[str, Any]) -> dict[str, Any]:
    mode = spec["mode"]
    counters = {"commands": 0, "connects": 0}
    if mode == "ours":
        import asyncssh  # noqa: F401 - imported up front, as the anchor's trigger module does

        from cosmodm_ops.airflow import sites
        from cosmodm_ops.airflow.triggers import BatchJobTrigger
        from cosmodm_ops.batch import ssh  # noqa: F401

        sites.scheduler_for("slurm")  # import the scheduler module before measuring

        if spec.get("arrays"):  # one ArrayJobTrigger per array (the ArrayJobOperator's), same shared poller
            from cosmodm_ops.airflow.arrays import ArrayJobTrigger

            triggers = [ArrayJobTrigger(job_id=a["job_id"], array_size=a["size"], scheduler="slurm",
                                        ssh_conn_id=CONN_OURS, site="bench", poll_interval=spec["poll"])
                        for a in spec["arrays"]]
        else:
            triggers = [BatchJobTrigger(job_id=j["job_id"], scheduler="slurm", ssh_conn_id=CONN_OURS, site="bench",
                                        poll_interval=spec["poll"]) for j in spec["jobs"]]
    else:
        from airflow.providers.ssh.triggers.ssh_remote_job import SSHRemoteJobTrigger

        run_command, connect = SSHRemoteJobTrigger._run_command, SSHRemoteJobTrigger._connect

        async def counted_run(self, conn, command):
            counters["commands"] += 1
            return await run_command(self, conn, command)

        async def counted_connect(self):
            conn = await connect(self)
            counters["connects"] += 1
            return conn

        SSHRemoteJobTrigger._run_command = counted_run
        SSHRemoteJobTrigger._connect = counted_connect
        triggers = [SSHRemoteJobTrigger(ssh_conn_id=CONN_ANCHOR, remote_host=None, job_id=j["job_id"],
                                        job_dir=j["job_dir"], log_file=f"{j['job_dir']}/stdout.log",
                                        exit_code_file=f"{j['job_dir']}/exit_code", remote_os="posix",
                                        poll_interval=spec["poll"]) for j in spec["jobs"]]
    noticed: dict[str, float] = {}
    states: dict[str, str] = {}

    async def one(trigger: Any, job_id: str) -> None:
        async for event in trigger.run():
            payload = event.payload
            for element in payload.get("elements") or [payload]:  # an array's event carries every element
                key = str(element.get("job_id") or job_id)
                noticed[key] = time.time()
                states[key] = str(element.get("state") or element.get("status"))
            return

    rss0 = _rss_mb()
    cpu0 = time.process_time()
    stop = asyncio.Event()
    lags: list[float] = []
    monitor = asyncio.create_task(_lag_monitor(stop, lags))
    watched = spec.get("arrays") or spec["jobs"]
    tasks = [asyncio.create_task(one(t, j["job_id"])) for t, j in zip(triggers, watched, strict=True)]
    await asyncio.sleep(2.0)  # every trigger has started (connected, registered)
    print("READY", flush=True)
    t_ready = time.time()
    _done, pending = await asyncio.wait(tasks, timeout=spec.get("limit_s"))
    for task in pending:  # past the limit: report what was noticed (the rest counts as not completed)
        task.cancel()
    if pending:  # a trigger stuck in an SSH connect/close may not honour the cancel: do not wait for it
        await asyncio.wait(pending, timeout=10)
    stop.set()
    await monitor
    if mode == "ours":
        from cosmodm_ops.batch.ssh import AsyncSSHRunner

        counters["commands"] = sum(r.commands for r in AsyncSSHRunner._shared.values())
        counters["connects"] = sum(r.connects for r in AsyncSSHRunner._shared.values())
    return {"noticed": noticed, "states": states, "t_ready": t_ready, "rss_base_mb": rss0, "timed_out": len(pending),
            "rss_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "n": len(spec["jobs"]), "cpu_s": time.process_time() - cpu0, "max_loop_stall_s": max(lags, default=0.0), **counters}


def watch_main(spec_path: str) -> None:
    """Entry point of the triggerer process (``--watch SPEC``)."""
    import logging

    logging.getLogger("paramiko").setLevel(logging.WARNING)
    spec = json.loads(Path(spec_path).read_text())

    async def watch_and_write() -> None:
        Path(spec["out"]).write_text(json.dumps(await _watch(spec)))
        if spec.get("limit_s"):  # asyncio.run would wait for triggers stuck past the limit: leave now
            sys.stdout.flush()
            os._exit(0)

    asyncio.run(watch_and_write())


# --------------------------------------------------------------------------- the driver
def _job_command(end_dir: str, sleep_s: int, job_dir: str | None) -> list[str]:
    """Sleep, then record the end time; the anchor's also writes an exit-code file."""
    # An array element's id is <array>_<index> (SLURM_JOB_ID is its own number): name the file as it is watched.
    body = (f'sleep {int(sleep_s)}; id=${{SLURM_ARRAY_JOB_ID:+${{SLURM_ARRAY_JOB_ID}}_$SLURM_ARRAY_TASK_ID}}; '
            f'date +%s.%N > {shlex.quote(end_dir)}/"${{id:-$SLURM_JOB_ID}}"')
    if job_dir is None:
        return ["bash", "-c", body]
    q = shlex.quote(job_dir)
    # The provider's wrapper pattern: output to stdout.log, then exit code via a temp file + rename.
    return ["bash", "-c", (f"mkdir -p {q}; {{ {body}; }} > {q}/stdout.log 2>&1; rc=$?; "
                          f"echo $rc > {q}/exit_code.tmp && mv {q}/exit_code.tmp {q}/exit_code; exit $rc")]


def _submit(mode: str, n: int, sleep_s: int, base: str, end_dir: str,
            array_size: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Submit the phase's N jobs: ours over one login (as ceil(N/array_size) arrays when array_size > 0),
    the anchor over one login per job. Returns (jobs, arrays): every job or element id, and the arrays."""
    from cosmodm_ops.batch import JobSpec, get_scheduler
    from cosmodm_ops.batch.ssh import SSHRunner

    scheduler = get_scheduler("slurm")
    walltime = max(5, sleep_s // 60 * 3)
    jobs: list[dict[str, Any]] = []
    arrays: list[dict[str, Any]] = []
    if mode == "ours" and array_size > 0:
        with SSHRunner.from_airflow_connection(CONN_OURS) as shared:
            for offset in range(0, n, array_size):
                size = min(array_size, n - offset)
                spec = JobSpec(name=f"bench-ours-a{offset:04d}-{secrets.token_hex(2)}",
                               command=_job_command(end_dir, sleep_s, None), workdir=base, memory_gb=0.1,
                               walltime_min=walltime, array_size=size)
                array_id = scheduler.submit(shared, spec)
                arrays.append({"job_id": array_id, "size": size})
                jobs += [{"job_id": e, "name": spec.name, "job_dir": None}
                         for e in scheduler.array_element_ids(array_id, size)]
        return jobs, arrays
    shared = SSHRunner.from_airflow_connection(CONN_OURS) if mode == "ours" else None
    for i in range(n):
        name = f"bench-{mode}-{i:04d}-{secrets.token_hex(2)}"
        job_dir = None if mode == "ours" else f"{base}/jobs/{name}"
        spec = JobSpec(name=name, command=_job_command(end_dir, sleep_s, job_dir), workdir=base,
                       memory_gb=0.1, walltime_min=walltime)
        if shared is not None:
            job_id = scheduler.submit(shared, spec)
        else:
            with SSHRunner.from_airflow_connection(CONN_OURS) as own:  # the operator's own login
                job_id = scheduler.submit(own, spec)
        jobs.append({"job_id": job_id, "name": name, "job_dir": job_dir})
    if shared is not None:
        shared.close()
    return jobs, arrays


def _phase(mode: str, n: int, sleep_s: int, poll: float, sshd: Any, cluster: Any, work: str,
           env: dict[str, str], tmp: Path, array_size: int = 0) -> dict[str, Any]:
    from cosmodm_ops.batch.ssh import SSHRunner

    base = f"{work}/{mode}"
    end_dir = f"{base}/end"
    with SSHRunner.from_airflow_connection(CONN_OURS) as admin:
        admin.run(["mkdir", "-p", end_dir])
    logins0, drops0 = sshd.logins(), sshd.count("past MaxStartups")
    # Jobs queue in a DOWN partition and all start when it comes UP, once the watchers run.
    cluster.run("scontrol", "update", "PartitionName=debug", "State=DOWN")
    t0 = time.time()
    jobs, arrays = _submit(mode, n, sleep_s, base, end_dir, array_size)
    submit_s = time.time() - t0
    logins_submit = sshd.logins() - logins0

    spec_path, out_path = tmp / f"{mode}.spec.json", tmp / f"{mode}.out.json"
    limit_s = sleep_s * 4 + 600
    spec_path.write_text(json.dumps({"mode": mode, "jobs": jobs, "arrays": arrays, "poll": poll,
                                     "out": str(out_path), "limit_s": limit_s}))
    watcher = subprocess.Popen([sys.executable, "-m", "bench.bench_batch", "--watch", str(spec_path)], cwd=REPO,
                               env=env, stdout=subprocess.PIPE, stderr=open(tmp / f"{mode}.stderr", "w"),  # noqa: SIM115
                               text=True)
    assert watcher.stdout is not None
    for line in watcher.stdout:
        if line.strip() == "READY":
            break
    with SSHRunner.from_airflow_connection(CONN_OURS) as admin:
        cluster.run("scontrol", "update", "PartitionName=debug", "State=UP")
        t_go = time.time()
        deadline = time.monotonic() + limit_s + 60
        released = 0
        load_max = os.getloadavg()[0]
        while watcher.poll() is None and time.monotonic() < deadline:
            time.sleep(5)
            load_max = max(load_max, os.getloadavg()[0])
            # On an overloaded machine slurmd may fail to launch a job in time; Slurm then requeues
            # it HELD ("launch failed requeued held") and it would never run: release it, and say so.
            pending = cluster.run("squeue", "-h", "-t", "PD", "-o", "%i|%r", check=False).stdout.splitlines()
            for line in pending:
                job, _, reason = line.partition("|")
                if "launch failed" in reason:
                    cluster.run("scontrol", "release", job, check=False)
                    released += 1
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait(30)
        ends_raw = admin.run(["bash", "-c", f'for f in {shlex.quote(end_dir)}/*; do echo "${{f##*/}} $(cat "$f")"; done'])
    if watcher.returncode != 0 and not out_path.exists():
        msg = f"{mode} watcher failed ({watcher.returncode}): {(tmp / f'{mode}.stderr').read_text()[-3000:]}"
        raise RuntimeError(msg)
    res = json.loads(out_path.read_text())
    return {"jobs": n, "array_size": array_size, "arrays": len(arrays), "launch_failures_released": released,
            "submit_s": round(submit_s, 1), "logins_submit": logins_submit,
            "logins_watch": sshd.logins() - logins0 - logins_submit - 1,  # minus the admin login (end times)
            "logins_total": sshd.logins() - logins0 - 1,
            "sshd_drops": sshd.count("past MaxStartups") - drops0, "load_max": round(load_max, 1),
            **summarize(res, [j["job_id"] for j in jobs], parse_end_times(ends_raw.stdout), t_go, sleep_s, poll)}


def parse_end_times(text: str) -> dict[str, float]:
    """``<job id> <epoch seconds>`` lines (the jobs' end files) -> {job id: end time}; other lines skipped."""
    ends = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                ends[parts[0]] = float(parts[1])
            except ValueError:
                continue
    return ends


def summarize(res: dict[str, Any], job_ids: list[str], ends: dict[str, float], t_go: float, sleep_s: float,
              poll: float) -> dict[str, Any]:
    """The watcher's figures for one phase: completed, commands per job-second, triggerer memory and CPU,
    end -> noticed latency, and the last job's end -> the last notice against the ideal (one poll interval)."""
    n = len(job_ids)
    noticed = res["noticed"]
    lat = sorted(noticed[j] - ends[j] for j in job_ids if j in ends and j in noticed)
    watch_s = max(max(noticed.values(), default=t_go) - t_go, 1e-3)
    last_gap = max(noticed.values()) - max(ends.values()) if noticed and ends else None
    return {
        "completed": sum(1 for j in job_ids if res["states"].get(j) in ("completed", "success")),
        "timed_out_watchers": res.get("timed_out", 0),
        "ssh_connections_triggerer": res["connects"],
        "remote_commands": res["commands"], "commands_per_s": round(res["commands"] / watch_s, 3),
        "commands_per_s_per_job": round(res["commands"] / watch_s / n, 5),
        "triggerer_rss_base_mb": round(res["rss_base_mb"], 1), "triggerer_rss_peak_mb": round(res["rss_peak_mb"], 1),
        "triggerer_rss_per_job_kb": round((res["rss_peak_mb"] - res["rss_base_mb"]) * 1024 / n, 1),
        "triggerer_cpu_s": round(res["cpu_s"], 2),
        "triggerer_cpu_ms_per_job_s": round(res["cpu_s"] * 1000 / (n * watch_s), 3),
        "max_loop_stall_s": round(res["max_loop_stall_s"], 3),
        "latency_median_s": round(statistics.median(lat), 2) if lat else None,
        "latency_p95_s": round(lat[int(0.95 * (len(lat) - 1))], 2) if lat else None,
        "latency_max_s": round(lat[-1], 2) if lat else None,
        "last_end_to_last_noticed_s": None if last_gap is None else round(last_gap, 2),
        "last_end_to_last_noticed_over_ideal": None if last_gap is None else round(last_gap / poll, 2),
        "makespan_over_ideal": round(watch_s / sleep_s, 3),
    }


def set_conf_line(conf: str, key: str, value: str) -> str:
    """``conf`` (slurm.conf text) with ``key=value``: the existing line replaced, else appended."""
    lines = conf.splitlines()
    out = [f"{key}={value}" if ln.split("=", 1)[0].strip() == key else ln for ln in lines]
    if out == lines and f"{key}={value}" not in lines:
        out.append(f"{key}={value}")
    return "\n".join(out) + "\n"


#: slurmctld starts at most ``default_queue_depth`` (100) jobs per main-scheduler pass, the rest in later
#: passes or backfill cycles (seen: 101 jobs, then 399 14-29 s later); all N must start together here.
SCHED_PARAMS = "batch_sched_delay=0,sched_min_interval=0,default_queue_depth=1000"


def light_cluster(base: type, acct_frequency: str) -> type:
    """The fixture's SlurmCluster with the test tier's per-second accounting sampling
    (``JobAcctGatherFrequency=task=1``: every job's slurmstepd scans /proc each second, which
    at 500 jobs saturated slurmd) replaced by ``acct_frequency`` (MaxRSS is still taken at the end),
    and :data:`SCHED_PARAMS`."""

    class LightSlurm(base):  # type: ignore[misc, valid-type]
        def _write_confs(self) -> None:
            super()._write_confs()
            text = set_conf_line(self.conf.read_text(), "JobAcctGatherFrequency", acct_frequency)
            text = set_conf_line(text, "SchedulerParameters", SCHED_PARAMS)
            tmp = self.conf.with_suffix(".tmp")
            tmp.write_text(text)
            tmp.chmod(0o644)
            tmp.replace(self.conf)

    return LightSlurm


def _table(results: dict[str, dict[str, Any]]) -> str:
    keys = [k for k in results["ours"] if k in results["anchor"]]
    width = max(map(len, keys))
    lines = [f"{'':{width}}  {'ours':>12}  {'anchor':>12}"]
    lines += [f"{k:{width}}  {results['ours'][k]!s:>12}  {results['anchor'][k]!s:>12}" for k in keys]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run both phases; print a table and one JSON line; return the figures."""
    p = argparse.ArgumentParser(prog="bench_batch", description=__doc__.split("\n")[0])
    p.add_argument("--jobs", type=int, default=50, help="concurrent jobs per phase (default 50; try 500)")
    p.add_argument("--sleep", type=int, default=60, help="seconds each job sleeps (the ideal makespan)")
    p.add_argument("--poll", type=float, default=5.0, help="poll interval of ours (the anchor's is 5 s)")
    p.add_argument("--only", choices=["ours", "anchor"], help="run one phase")
    p.add_argument("--array-size", type=int, default=0,
                   help="ours: submit the jobs as arrays of this many elements, one ArrayJobTrigger each (0 = single jobs)")
    p.add_argument("--anchor-jobs", type=int, default=None, help="jobs of the anchor phase (default: --jobs)")
    p.add_argument("--acct-frequency", default="task=0",
                   help="slurm.conf JobAcctGatherFrequency (default task=0: no per-second sampling of every job)")
    p.add_argument("--keep", action="store_true", help="keep the temp folder (daemon logs, sshd log)")
    p.add_argument("--watch", help=argparse.SUPPRESS)
    args = p.parse_args(argv if argv is not None else [])
    if args.watch:
        watch_main(args.watch)
        return {}
    if os.geteuid() != 0:
        print("bench_batch: skipped (needs root to start a private sshd and Slurm)")
        return {"skipped": "needs root"}
    sys.path.insert(0, str(REPO))
    import logging

    logging.getLogger("paramiko").setLevel(logging.WARNING)
    from tests.fixtures.services import SSHD, SlurmCluster

    tmp = Path(f"/tmp/cosmodm-bench-batch-{secrets.token_hex(3)}")
    tmp.mkdir(mode=0o755)
    sshd = SSHD.create(tmp / "sshd")
    sshd.start()
    anchor_jobs = args.anchor_jobs or args.jobs
    cluster = light_cluster(SlurmCluster, args.acct_frequency).create(tmp / "slurm",
                                                                      cpus=max(args.jobs, anchor_jobs) + 8)
    home = Path(pwd.getpwnam(sshd.user).pw_dir)
    work = home / f"bench-batch-{secrets.token_hex(3)}"
    results: dict[str, Any] = {}
    try:
        # this cluster's SLURM_CONF reaches the SSH sessions; /etc/slurm/slurm.conf (machine-wide) is left alone
        cluster.start(install_global_conf=False)
        sshd.use_env(SLURM_CONF=str(cluster.conf))
        work.mkdir()
        shutil.chown(work, sshd.user, sshd.user)
        env = {**os.environ, f"AIRFLOW_CONN_{CONN_OURS.upper()}": sshd.airflow_conn_json(),
               f"AIRFLOW_CONN_{CONN_ANCHOR.upper()}": sshd.airflow_conn_json(),  # same server, pinned key
               "PYTHONPATH": str(REPO), "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING"}
        os.environ.update({k: v for k, v in env.items() if k.startswith("AIRFLOW_CONN_")})
        for mode in ("ours", "anchor"):
            if args.only and mode != args.only:
                continue
            n = args.jobs if mode == "ours" else anchor_jobs
            results[mode] = _phase(mode, n, args.sleep, args.poll if mode == "ours" else 5.0, sshd,
                                   cluster, str(work), env, tmp, args.array_size if mode == "ours" else 0)
            print(json.dumps({"phase": mode, **results[mode]}), flush=True)  # kept if a later phase fails
            cluster.cancel_all()  # nothing of this phase left on the node for the next
    finally:
        cluster.stop()
        sshd.cleanup()
        shutil.rmtree(work, ignore_errors=True)
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    if "ours" in results and "anchor" in results:
        print(_table(results))
        o, a = results["ours"], results["anchor"]
        results["ratios"] = {
            "logins_anchor_over_ours": round(a["logins_total"] / max(1, o["logins_total"]), 1),
            "commands_per_job_anchor_over_ours": round(a["commands_per_s_per_job"]
                                                       / max(1e-9, o["commands_per_s_per_job"]), 1),
            "cpu_anchor_over_ours": round(a["triggerer_cpu_s"] / max(1e-3, o["triggerer_cpu_s"]), 1),
        }
    results.update({"n_jobs": args.jobs, "anchor_jobs": anchor_jobs, "array_size": args.array_size,
                    "acct_frequency": args.acct_frequency, "sleep_s": args.sleep, "poll_s": args.poll,
                    "workdir": str(tmp) if args.keep else None})
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
