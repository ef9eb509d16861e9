"""``make demo``: a small simulated night through the nightly DAG, on the embedded defaults.

1. simulate a decam-mini night (5 exposures in g and r, one cloudy) into ``var/demo/incoming/<night>``;
2. run ``nightly_ingest`` through Airflow (``airflow dags test``: SQLite metadata DB, the local
   batch runner, local transfer) with the archive under ``var/demo/archive`` (SQLite);
3. run ``tile_coadd`` (``airflow dags test``) on the tile the night covered best, in every band it has
   (``COSMODM_DEMO_COADD=0`` skips it);
4. print one JSON line ``{"night", "exposures", "accepted", "quarantined", "failed", "archive", "db", "report",
   "coadds"}`` and how to open the Airflow UI on it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

NIGHT = os.environ.get("COSMODM_DEMO_NIGHT", "2026-11-23")
REPO = Path(__file__).resolve().parents[1]
VAR = Path(os.environ.get("COSMODM_DEMO_DIR", REPO / "var" / "demo"))


def demo_env(var: Path = VAR) -> dict[str, str]:
    """Environment of the demo: private Airflow home, archive and site folders under ``var``."""
    venv_bin = Path(sys.executable).parent
    env = dict(os.environ)
    env.update({
        "AIRFLOW_HOME": str(var / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps({"type": "file", "log_file_path": str(var / "openlineage.jsonl"),
                                                       "append": True}),
        # campaign tasks' events carry their campaign id (a `cosmodm_campaign` run facet)
        "AIRFLOW__OPENLINEAGE__CUSTOM_RUN_FACETS": "cosmodm_ops.airflow.lineage.campaign_run_facets",
        # one exposure files hundreds of products (DECam: 62 CCDs x 6); Airflow's default keeps 100 per task
        "AIRFLOW__LINEAGE__MAX_ASSETS_PER_COLLECTOR": "20000",
        "COSMODM_DB": f"sqlite:///{var / 'archive' / 'cosmodm.db'}",
        "COSMODM_ARCHIVE_ROOT": str(var / "archive"),
        "COSMODM_RAW_SOURCE": str(var / "incoming"),
        "COSMODM_WORK_ROOT": str(var / "work"),
        "COSMODM_SITE": "local",
        "COSMODM_MAX_CONCURRENT": "2",
        "PATH": f"{venv_bin}{os.pathsep}{env.get('PATH', '')}",
        "PYTHONPATH": str(REPO),
    })
    return env


def _run(argv: list[str], env: dict[str, str], **kw) -> subprocess.CompletedProcess:
    print("+", " ".join(argv), file=sys.stderr, flush=True)
    return subprocess.run(argv, env=env, check=True, cwd=REPO, **kw)


def _coadd_counts(tile: str, bands: list[str], db: str, root: str) -> list[dict]:
    """Per band of a tile: the archived coadd (path) and whether QA quarantined it."""
    from cosmodm_ops.archive import Archive

    archive = Archive(db, root)
    out = []
    for band in bands:
        found = archive.find(survey="demo", tile=tile, band=band, kind="coadd")
        out.append({"tile": tile, "band": band, "coadd": str(Path(root) / found[-1]["path"]) if found else None,
                    "quarantined": archive.is_quarantined({"survey": "demo", "tile": tile, "band": band})})
    return out


def main() -> int:
    env = demo_env()
    venv_bin = Path(sys.executable).parent
    incoming = VAR / "incoming" / NIGHT
    if not any((incoming / "raw").glob("*.fits*")):
        shutil.rmtree(incoming, ignore_errors=True)
        _run([str(venv_bin / "cosmodm"), "sim", "night", "--camera", "decam-mini", "--night", NIGHT,
              "--exposures", "5", "--bands", "g,r", "--cloudy", "1", "--seed", "2026", "--out", str(incoming)], env)
    (VAR / "archive").mkdir(parents=True, exist_ok=True)
    _run([str(venv_bin / "cosmodm"), "archive", "init"], env)
    _run([str(venv_bin / "airflow"), "db", "migrate"], env, stdout=subprocess.DEVNULL)
    conf = json.dumps({"night": NIGHT, "site": "local", "survey": "demo", "version": "v1"})
    _run([str(venv_bin / "airflow"), "dags", "test", "nightly_ingest", "--conf", conf], env, stdout=sys.stderr)
    from cosmodm_ops.workflows.nightly import accepted_tiles, night_counts

    db, root = env["COSMODM_DB"], env["COSMODM_ARCHIVE_ROOT"]
    counts = night_counts(NIGHT, db, root)
    coadds = []
    if os.environ.get("COSMODM_DEMO_COADD", "1") != "0":
        # the tile_coadd DAG on the tile the night covered best, in every band it has
        tiles = accepted_tiles(NIGHT, db, root)
        if tiles:
            tile, bands = max(tiles.items(), key=lambda kv: (len(kv[1]), sum(kv[1].values()), kv[0]))
            tconf = json.dumps({"tile": tile, "bands": sorted(bands), "site": "local", "survey": "demo",
                                "version": "v1"})
            # a simulated night: the calibration scores its catalogs against the simulator's truth
            cenv = dict(env, COSMODM_TRUTH_CATALOG=str(incoming / "truth" / "objects.fits"))
            _run([str(venv_bin / "airflow"), "dags", "test", "tile_coadd", "--conf", tconf], cenv, stdout=sys.stderr)
            coadds = _coadd_counts(tile, sorted(bands), db, root)
    print(json.dumps({"night": NIGHT, **counts, "archive": root, "db": db, "coadds": coadds}))
    print(f"Open the Airflow UI on this run:  AIRFLOW_HOME={env['AIRFLOW_HOME']} "
          f"AIRFLOW__CORE__DAGS_FOLDER={REPO / 'dags'} {venv_bin / 'airflow'} standalone   "
          "(then http://localhost:8080; password in $AIRFLOW_HOME/simple_auth_manager_passwords.json.generated)",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
