"""The nightly DAG end to end on the production-like site ``loopback-slurm``, checked against simulation truth.

``airflow dags test nightly_ingest`` with ``COSMODM_SITE=loopback-slurm``: the night's input goes to the
site by rsync over the private sshd (fixture ``sshd``), each exposure's single-epoch job is submitted
with sbatch over SSH to the one-node Slurm (fixture ``slurm_cluster``) and runs there as the SSH user
``cosmodmtest``, and the archive is the real PostgreSQL (fixture ``pg_url``). The tests run as root,
so every folder the jobs write is made for ``cosmodmtest``.

Site paths with no environment variable of their own reach the site config through
``$COSMODM_CONFIG_OVERRIDES``: ``site.batch.python`` (the job's ``cosmodm``: a venv on the system
Python that ``cosmodmtest`` can run, seeing this checkout's packages; the uv venv's interpreter lives
under ``/root``, which the job user cannot enter) and ``site.ramdisk.path`` (a per-test folder).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import pwd
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest

from tests.support import REPO, need, need_binary

pytestmark = [pytest.mark.e2e, pytest.mark.ssh, pytest.mark.slurm, pytest.mark.postgres]

NIGHT = "2026-11-20"
SITE = "loopback-slurm"
SYSTEM_PYTHON = "/usr/bin/python3.11"


def _job_python(base: Path) -> list[str]:
    """A venv on the system Python (readable by every user) that sees this checkout's packages."""
    venv = base / "jobpy"
    subprocess.run([SYSTEM_PYTHON, "-m", "venv", "--without-pip", str(venv)], check=True, capture_output=True)
    site_packages = sysconfig.get_paths()["purelib"]  # the test's venv: numpy, fitsio, ... and cosmodm_ops (editable)
    (venv / "lib" / "python3.11" / "site-packages" / "cosmodm_test_checkout.pth").write_text(
        f"import site; site.addsitedir({site_packages!r})\n")
    return [str(venv / "bin" / "python"), "-m", "cosmodm_ops.cli"]


def _ram_parent() -> str | None:
    """/dev/shm when it has room for a night's staging (1 GB), else the temp folder."""
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and shutil.disk_usage(shm).free > 2**30 else None


def _owned_by(path: Path, user: str) -> Path:
    account = pwd.getpwnam(user)
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, account.pw_uid, account.pw_gid)
    path.chmod(0o755)
    return path


def _runs(db_url: str) -> list[dict]:
    import sqlalchemy as sa

    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text(
                'SELECT batch_job_id, site, state, exit_code, "start", "end", dag_id, task_id FROM runs '
                "WHERE dag_id = 'nightly_ingest'")).mappings().all()
        return [dict(r) for r in rows]
    finally:
        engine.dispose()


def _sacct(slurm, job_id: str) -> dict[str, str]:
    res = slurm.run("sacct", "-j", job_id, "-X", "-n", "-P", "-o", "JobID,User,State,ExitCode,ElapsedRaw")
    line = next(ln for ln in res.stdout.splitlines() if ln.split("|")[0] == job_id)
    keys = ("job_id", "user", "state", "exit_code", "elapsed_s")
    return dict(zip(keys, line.split("|"), strict=True))


@pytest.fixture
def night_run(ssh_slurm, pg_url):
    """Simulate a decam-mini night and run nightly_ingest on loopback-slurm; yields what the checks need."""
    need_binary("source-extractor", "scamp", "psfex", "rsync")
    need(Path(SYSTEM_PYTHON).exists(), f"{SYSTEM_PYTHON} is missing (the job user's interpreter)")
    sshd, slurm = ssh_slurm.sshd, ssh_slurm.slurm
    base = Path(tempfile.mkdtemp(prefix="cosmodm-e2e-slurm-"))
    base.chmod(0o755)
    ram: Path | None = None
    try:
        incoming, archive = base / "incoming", base / "archive"
        work = _owned_by(base / "work", sshd.user)
        # the RAM-disk parent: per test, owned by the job user. /dev/shm is shared with other work on this
        # machine (often half full), and staging refuses to fill a filesystem past site.ramdisk.max_fraction
        # (default 0.5): the test raises the limit rather than depend on what else runs.
        ram = _owned_by(Path(tempfile.mkdtemp(prefix="cosmodm-e2e-ram-", dir=_ram_parent())), sshd.user)
        archive.mkdir()
        job_python = _job_python(base)
        venv_bin = Path(sys.executable).parent
        env = dict(os.environ)
        env.update({
            "AIRFLOW_HOME": str(base / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__OPENLINEAGE__DISABLED": "True",
            "AIRFLOW_CONN_COSMODM_LOOPBACK": sshd.airflow_conn_json(),
            "COSMODM_SITE": SITE,
            "COSMODM_DB": pg_url,
            "COSMODM_ARCHIVE_ROOT": str(archive),
            "COSMODM_RAW_SOURCE": str(incoming),
            "COSMODM_WORK_ROOT": str(work),
            "COSMODM_MAX_CONCURRENT": "3",
            "COSMODM_CONFIG_OVERRIDES": json.dumps(
                {"site": {"batch": {"python": " ".join(job_python)},
                          "ramdisk": {"path": str(ram), "max_fraction": 0.95}}}),
            "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONPATH": str(REPO),
        })

        def run(argv: list[str], timeout: float) -> subprocess.CompletedProcess:
            res = subprocess.run(argv, check=False, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
            assert res.returncode == 0, f"{argv[:4]} exited {res.returncode}:\n{res.stdout[-6000:]}\n{res.stderr[-6000:]}"
            return res

        run([str(venv_bin / "cosmodm"), "sim", "night", "--camera", "decam-mini", "--night", NIGHT, "--exposures", "3",
             "--bands", "g,r", "--cloudy", "1", "--seed", "7", "--no-progress", "--out", str(incoming / NIGHT)], 900)
        run([str(venv_bin / "cosmodm"), "archive", "init"], 120)
        run([str(venv_bin / "airflow"), "db", "migrate"], 600)
        logins_before = sshd.logins()
        conf = json.dumps({"night": NIGHT, "site": SITE, "survey": "demo", "version": "v1"})
        dag = run([str(venv_bin / "airflow"), "dags", "test", "nightly_ingest", "--conf", conf], 1800)
        yield {"base": base, "incoming": incoming / NIGHT, "work": work / NIGHT, "archive": str(archive),
               "db": pg_url, "sshd": sshd, "slurm": slurm, "logins": sshd.logins() - logins_before,
               "log": dag.stdout + dag.stderr, "ram": ram}
    finally:
        shutil.rmtree(base, ignore_errors=True)
        if ram is not None:
            shutil.rmtree(ram, ignore_errors=True)


def test_nightly_ingest_on_ssh_slurm_and_postgres(night_run):
    import fitsio

    from cosmodm_ops.archive import Archive
    from cosmodm_ops.workflows.nightly import night_counts

    r = night_run
    archive = Archive(r["db"], r["archive"])
    assert r["db"].startswith("postgresql")

    # verdicts vs simulation truth: the cloudy exposure quarantined (zeropoint), the others accepted
    truth = fitsio.read(str(r["incoming"] / "truth" / "exposures.fits"))
    expnums = {int(e) for e in truth["expnum"]}
    cloudy = {int(e) for e, c in zip(truth["expnum"], truth["cloudy"], strict=True) if c}
    assert len(expnums) == 3 and len(cloudy) == 1
    counts = night_counts(NIGHT, r["db"], r["archive"])
    assert (counts["exposures"], counts["accepted"], counts["quarantined"], counts["failed"]) == (3, 2, 1, 0), (
        counts, r["log"][-4000:])
    quarantined = {e for e in expnums if archive.is_quarantined({"survey": "demo", "night": NIGHT, "expnum": e})}
    assert quarantined == cloudy
    reasons = archive.quarantine_reasons({"survey": "demo", "night": NIGHT, "expnum": next(iter(cloudy))})
    assert any("zeropoint" in x for x in reasons), reasons

    # products in PostgreSQL: raw per exposure, an image per CCD, objects, QA rows; files verified
    assert len(archive.find(survey="demo", night=NIGHT, kind="raw")) == 3
    images = archive.find(survey="demo", night=NIGHT, kind="image")
    assert len(images) == 3 * 4 and {int(i["expnum"]) for i in images} == expnums
    db_counts = archive.counts()
    assert db_counts["objects"] > 200 and db_counts["qa_results"] > 0 and db_counts["runs"] == 3, db_counts
    report = archive.verify(quarantine=False)
    assert report.clean, report.to_dict()

    # the jobs ran on the site: outputs written by the SSH user, input brought by rsync
    user = pwd.getpwnam(r["sshd"].user)
    for e in expnums:
        manifest = r["work"] / f"{e:08d}" / "manifest.json"
        assert manifest.stat().st_uid == user.pw_uid
    raws = sorted((r["incoming"] / "raw").glob("*.fits.fz"))
    moved = r["work"] / "input" / "raw"
    assert sorted(p.name for p in moved.iterdir()) == [p.name for p in raws]
    assert all((moved / p.name).read_bytes() == p.read_bytes() for p in raws)
    assert (moved / raws[0].name).stat().st_uid == user.pw_uid

    # runs rows carry the Slurm job id; Slurm's accounting agrees (user, COMPLETED, exit 0, elapsed)
    runs = _runs(r["db"])
    assert len(runs) == 3, runs
    for row in runs:
        job_id = str(row["batch_job_id"])
        assert job_id.isdigit(), row
        assert (row["site"], row["exit_code"], row["state"]) == (SITE, 0, "completed"), row
        start, end = (dt.datetime.fromisoformat(row[k]) for k in ("start", "end"))
        assert end > start, row
        acct = _sacct(r["slurm"], job_id)
        assert (acct["user"], acct["state"], acct["exit_code"]) == (r["sshd"].user, "COMPLETED", "0:0"), acct
        assert int(acct["elapsed_s"]) > 0, acct
    assert len({row["batch_job_id"] for row in runs}) == 3

    print("nightly on loopback-slurm:", json.dumps({"ssh_logins": r["logins"], "runs": runs}, default=str))
    # SSH logins stay bounded: one rsync per destination folder, then a few per job (submit, watch);
    # polls share connections (seen: 9 logins in all for 3 jobs)
    folders = {p.parent for p in (r["work"] / "input").rglob("*") if p.is_file()}
    assert len(folders) + 1 <= r["logins"] <= len(folders) + 3 * 3, (r["logins"], len(folders))

    # the RAM-disk areas were made under the per-test path and removed by the jobs; what stays is the node's
    # calibration cache (single_epoch/calibcache.py): whole entries of this night's calibration files only
    assert sorted(p.name for p in r["ram"].iterdir()) == ["calib-cache"]
    entries = [p for p in (r["ram"] / "calib-cache").iterdir() if p.is_dir() and p.name != "quarantine"]
    assert entries and not [p.name for p in entries if p.name.startswith(".tmp-")]
    for entry in entries:
        source = json.loads((entry / "meta.json").read_text())["source"]["path"]
        assert Path(source).parent.name == "calib" and Path(source).name.endswith(".fits"), source
