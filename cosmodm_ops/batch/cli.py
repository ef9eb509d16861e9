"""``cosmodm batch submit | status | cancel | script``: batch jobs from the command line.

Examples::

    cosmodm batch submit --site local --name try.t1 -- cosmodm fits info /data/x.fits
    cosmodm batch status --site local try.t1 --json
    cosmodm batch cancel --site local try.t1
    cosmodm batch script --system slurm --site example-hpc -- cosmodm single-epoch run ...

A site with an ``ssh_conn_id`` is reached through ``cosmodm_ops.batch.ssh`` and the Airflow
connection of that id (Airflow must be installed and the connection defined, e.g. as
``AIRFLOW_CONN_<ID>``); without them the command says so and exits 65.
Exit codes: 0 done, 65 bad input (unknown site, bad name, remote site unreachable from here),
75 transient (the batch system or the connection failed: try again).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``batch`` command group."""
    p = sub.add_parser("batch", help="submit, watch and cancel batch jobs (local, Slurm, PBS, LoadLeveler, HTCondor)")
    bs = p.add_subparsers(dest="batch_cmd", metavar="ACTION", required=True)

    s = bs.add_parser("submit", help="submit a command as a batch job at a site (idempotent by --name)")
    _site_args(s)
    _resource_args(s)
    s.add_argument("--json", action="store_true", help="print {job_id, name, system, site, workdir} as JSON")
    s.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command and its arguments")
    s.set_defaults(func=_submit)

    st = bs.add_parser("status", help="states of jobs (one batched query)")
    _site_args(st)
    st.add_argument("job_ids", nargs="+", metavar="JOBID")
    st.add_argument("--json", action="store_true", help="one JSON object: {job_id: status}")
    st.set_defaults(func=_status)

    c = bs.add_parser("cancel", help="cancel a job")
    _site_args(c)
    c.add_argument("job_id", metavar="JOBID")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=_cancel)

    r = bs.add_parser("script", help="print the submit script a site would use (nothing is submitted)")
    r.add_argument("--system", help="batch system (default: the site's)")
    _site_args(r)
    _resource_args(r)
    r.add_argument("--json", action="store_true", help="print {system, script} as JSON")
    r.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command and its arguments")
    r.set_defaults(func=_script)


def _site_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--site", default="local", help="site config name (include/configs/sites/; default local)")
    p.add_argument("--survey", default="demo", help="survey config for the merge (default demo)")


def _resource_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", help="job name (default: cli.<program>.<UTC time>); resubmitting a live name "
                                  "returns the running job")
    p.add_argument("--workdir", help="working directory on the compute side (default: <site work_root>/jobs)")
    p.add_argument("--nodes", type=int)
    p.add_argument("--cores", type=int)
    p.add_argument("--memory-gb", type=float)
    p.add_argument("--walltime-min", type=int)
    p.add_argument("--partition")
    p.add_argument("--account")
    p.add_argument("--qos")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="job environment (repeat)")
    p.add_argument("--no-ramdisk", action="store_true", help="do not set up the site's RAM disk")


class _BadInput(Exception):
    pass


def _fail(msg: str, code: int) -> int:
    print(f"cosmodm batch: {msg}", file=sys.stderr)
    return code


def _codes() -> tuple[int, int]:
    from cosmodm_ops.cli import EXIT_BAD_INPUT, EXIT_TRANSIENT

    return EXIT_BAD_INPUT, EXIT_TRANSIENT


def _site(args: argparse.Namespace) -> Any:
    from cosmodm_ops.config import load_config

    try:
        return load_config(args.survey, site=args.site).site
    except ValueError as err:
        raise _BadInput(str(err)) from err


def _runner(site: Any) -> Any:
    """A local runner, or the SSH runner of the site's Airflow connection."""
    if not site.ssh_conn_id:
        from cosmodm_ops.batch.runners import LocalRunner

        return LocalRunner()
    try:
        from cosmodm_ops.batch.ssh import SSHRunner
    except ImportError as err:
        msg = (f"site {site.name} is remote (ssh_conn_id={site.ssh_conn_id}) and no SSH runner is available "
               f"here ({err}): drive it from Airflow (BatchJobOperator)")
        raise _BadInput(msg) from err
    try:
        return SSHRunner.from_airflow_connection(site.ssh_conn_id, verify_host_key=site.verify_host_key)
    except Exception as err:  # missing connection, Airflow absent, bad key file: all mean "not from here"
        msg = (f"site {site.name}: cannot use Airflow connection {site.ssh_conn_id!r} ({type(err).__name__}: "
               f"{err}); define it (e.g. AIRFLOW_CONN_{site.ssh_conn_id.upper()}) or drive the site from Airflow")
        raise _BadInput(msg) from err


def _spec(args: argparse.Namespace, site: Any) -> Any:
    from cosmodm_ops.batch import JobSpec
    from cosmodm_ops.workflows.nightly import _site_path

    command = list(args.command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise _BadInput("no command: put it after --, e.g. cosmodm batch submit -- echo hello")
    env: dict[str, str] = {}
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep:
            raise _BadInput(f"--env {item!r}: use KEY=VALUE")
        env[key] = value
    name = args.name or f"cli.{Path(command[0]).name}.{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}"
    if args.workdir:
        workdir = args.workdir
    elif site.ssh_conn_id:
        workdir = f"{site.work_root.rstrip('/')}/jobs"
    else:
        workdir = str(_site_path(os.environ.get("COSMODM_WORK_ROOT") or site.work_root) / "jobs")
    b = site.batch
    try:
        return JobSpec(
            name=name, command=command, workdir=workdir,
            nodes=args.nodes or b.nodes, cores=args.cores or b.cores,
            memory_gb=args.memory_gb or b.memory_gb, walltime_min=args.walltime_min or b.walltime_min,
            partition=args.partition or b.partition, account=args.account or b.account, qos=args.qos or b.qos,
            env=env, ramdisk=None if args.no_ramdisk else site.ramdisk.path,
        )
    except ValueError as err:
        raise _BadInput(str(err)) from err


def _guard(func):
    """Translate errors into the shared exit codes (65 bad input, 75 transient)."""

    def wrapper(args: argparse.Namespace) -> int:
        from cosmodm_ops.batch import SchedulerError, SubmitError, TransportError

        bad, transient = _codes()
        try:
            return func(args)
        except (_BadInput, ValueError) as err:
            return _fail(str(err), bad)
        except (SubmitError, SchedulerError, TransportError) as err:
            detail = f": {err.stderr.strip()[-500:]}" if isinstance(err, SubmitError) and err.stderr else ""
            return _fail(f"{err}{detail}", transient)

    wrapper.__name__ = func.__name__
    wrapper.__doc__ = func.__doc__
    return wrapper


@_guard
def _submit(args: argparse.Namespace) -> int:
    from cosmodm_ops.batch import get_scheduler

    site = _site(args)
    spec = _spec(args, site)
    if not site.ssh_conn_id:
        Path(spec.workdir).mkdir(parents=True, exist_ok=True)
    job_id = get_scheduler(site.batch.system).submit(_runner(site), spec)
    info = {"job_id": job_id, "name": spec.name, "system": site.batch.system, "site": site.name,
            "workdir": spec.workdir, "stdout": f"{spec.workdir}/.cosmodm/{spec.name}.out",
            "stderr": f"{spec.workdir}/.cosmodm/{spec.name}.err"}
    if args.json:
        print(json.dumps(info))
    else:
        print(f"{job_id}\t{site.batch.system} job {spec.name} at site {site.name}; logs {info['stdout']}")
    return 0


@_guard
def _status(args: argparse.Namespace) -> int:
    from cosmodm_ops.batch import get_scheduler

    site = _site(args)
    statuses = get_scheduler(site.batch.system).status(_runner(site), args.job_ids)
    if args.json:
        out = {}
        for jid, st in statuses.items():
            row = asdict(st)
            row["state"] = st.state.value
            row["terminal"] = st.state.terminal
            out[jid] = row
        print(json.dumps(out))
        return 0
    for jid in args.job_ids:
        st = statuses[jid]
        cells = [jid, st.state.value, "" if st.exit_code is None else f"exit {st.exit_code}",
                 "" if st.elapsed_s is None else f"{st.elapsed_s:.1f} s",
                 "" if st.max_rss_mb is None else f"{st.max_rss_mb:.0f} MiB", st.nodes or "", st.reason or ""]
        print("\t".join(cells).rstrip())
    return 0


@_guard
def _cancel(args: argparse.Namespace) -> int:
    from cosmodm_ops.batch import get_scheduler

    site = _site(args)
    get_scheduler(site.batch.system).cancel(_runner(site), args.job_id)
    if args.json:
        print(json.dumps({"job_id": args.job_id, "cancelled": True}))
    else:
        print(f"cancelled {args.job_id}")
    return 0


@_guard
def _script(args: argparse.Namespace) -> int:
    from cosmodm_ops.batch import get_scheduler

    site = _site(args)
    system = args.system or site.batch.system
    try:
        scheduler = get_scheduler(system)
        text = scheduler.render_script(_spec(args, site))
    except ValueError as err:
        raise _BadInput(str(err)) from err
    if args.json:
        print(json.dumps({"system": system, "script": text}))
    else:
        sys.stdout.write(text)
    return 0
