"""``cosmodm bench NAME [--json]``: run one benchmark of the installed package.

Each benchmark is an entry of :data:`BENCHMARKS`: a name and the ``module:function``
(returning a dict of figures) that runs it; the function is imported only when chosen.
With ``--json`` only the JSON line is printed, else a table and then the JSON line.
"""

from __future__ import annotations

import argparse
import importlib
import json
from typing import Any

__all__ = ["BENCHMARKS", "OPTIONS", "register"]

#: name -> (``module:function`` returning a dict, help text, keys of the JSON line; empty = all)
BENCHMARKS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "detrend": (
        "cosmodm_ops.single_epoch.bench:detrend",
        "raw 2160 x 4146 CCD: crosstalk, overscan, trim, gain, bias, flat vs ccdproc and a memory copy",
        ("ours_ms", "ccdproc_ms", "memcopy_ms"),
    ),
    "photcal": (
        "cosmodm_ops.coadd.benchmarks:photcal",
        "relative zeropoints: CRLB ratio, 300-image tile, 100k-image survey",
        ("crlb_ratio", "tile_ms", "survey_100k_s", "survey_100k_peak_gb"),
    ),
    "sim": (
        "cosmodm_ops.sim.bench:sim_decam",
        "simulate one full DECam exposure (62 CCDs; target <= 60 s on 2 cores) and compare raw compression with fpack",
        ("exposure_s", "exposure_cpu_s", "ccd_ratio_ours", "ccd_ratio_fpack", "ratio_ours_over_fpack"),
    ),
    "tile": (
        "cosmodm_ops.coadd.benchmarks:tile",
        "a whole demo tile in one band through `cosmodm coadd run`, stage by stage, against SWarp alone",
        (),
    ),
    "psfhomog": (
        "cosmodm_ops.coadd.benchmarks:psfhomog",
        "PSF homogenization of one 2048 x 4096 CCD",
        (),
    ),
    "exposure": (
        "cosmodm_ops.single_epoch.exposure_bench:exposure",
        ("one simulated exposure through `cosmodm single-epoch run`: core-minutes vs DESDM's 320, own-code CPU "
        "share vs the Astromatic tools, bytes written vs a naive run"),
        ("wall_s", "cpu_total_s", "cpu_own_s", "cpu_astromatic_s", "core_min", "core_min_ratio_vs_desdm",
         "own_share", "bytes_output", "bytes_naive", "bytes_ratio", "n_ccds_ok", "core_minutes",
         "density_ratio_to_real", "io_ratio_read_write", "io_ratio_written", "previous_core_minutes",
         "core_minutes_warm", "core_minutes_cold", "io_ratio_read_write_warm", "io_ratio_read_write_cold",
         "exposures_per_node_night", "amortization", "tools_core_minutes", "format_floor_s_per_ccd",
         "own_share_floor"),
    ),
    "campaign": (
        "bench.bench_campaign:campaign",
        ("a campaign's items through Airflow: one job array per chunk (ArraySubmitOperator + ArrayJobOperator) vs "
         "one task per item "
         "(the naive anchor), in one airflow standalone; run from the repository (needs bench/ and tests/)"),
        ("items", "task_instances", "ssh_logins_per_site", "remote_commands_per_s", "lost", "duplicated", "wall_s",
         "naive_wall_s", "naive_task_instances", "throughput_ratio", "scheduler_peak_rss_mb",
         "triggerer_peak_rss_mb"),
    ),
    "ui": (
        "cosmodm_ops.ui.bench:ui",
        ("survey pages on 10^5 products / 10^4 exposures / 10^3 tiles (SQLite and PostgreSQL): p50/p95 of every "
         "page and JSON endpoint under 10 clients, against Airflow's dagRuns list"),
        (),
    ),
    "clusters": (
        "cosmodm_ops.clusters.imagebench:clusters_bench",
        ("cluster follow-up vs truth on >= 50 simulated candidates (default image level: PS1-like warps -> "
         "coadds -> catalogues -> finder; --level catalogue: the finder alone): photo-z scatter, outliers, "
         "completeness, purity, CPU per candidate"),
        ("sigma_dz", "outlier_fraction", "completeness_rich20", "purity", "core_s_per_candidate", "n_candidates"),
    ),
    "scale": (
        "bench.bench_scale:scale",
        ("a 1000- then a 10,000-item campaign (job arrays of the fast stand-in stage) on the Celery tier: lost, "
         "duplicated, peak RSS of every Airflow process per item count, metadata-DB rows per item; run from the "
         "repository (needs bench/ and tests/)"),
        ("runs", "rss_growth", "rss_bounded", "lost", "duplicated", "all_success", "load"),
    ),
}

#: name -> options of that benchmark: (flag, ``add_argument`` keywords); each value goes to its function by ``dest``.
OPTIONS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "campaign": [
        ("--items", {"type": int, "default": 200, "help": "work items (default 200)"}),
        ("--chunk", {"type": int, "default": 50, "help": "items per chunk = elements per job array (default 50)"}),
        ("--site", {"default": "local", "choices": ["local", "loopback-slurm"],
                    "help": "site: local, or loopback-slurm (a private sshd + one-node Slurm; root)"}),
        ("--naive-items", {"type": int, "default": None,
                           "help": "run the naive anchor on this many items and extrapolate (default: all)"}),
    ],
    "scale": [
        ("--items", {"default": "1000,10000", "help": "item counts, run in turn on one tier (default 1000,10000)"}),
        ("--chunk", {"type": int, "default": 500, "help": "items per job array (default 500)"}),
        ("--parallel", {"type": int, "default": 8, "help": "elements of one array running at once (default 8)"}),
        ("--broker-db", {"type": int, "default": 11, "help": "Redis database number (default 11)"}),
    ],
    "ui": [
        ("--clients", {"type": int, "default": 10, "help": "concurrent clients (default 10)"}),
        ("--per-client", {"type": int, "default": 30, "help": "requests per client and endpoint (default 30: "
                         "a p95 of 300 requests; 10 gave one of 100, set by one or two queueing episodes)"}),
        ("--backends", {"default": "sqlite,postgres", "help": "archive databases to measure (default both)"}),
        ("--workers", {"type": int, "default": 2, "help": "api-server worker processes (default 2: the cores here)"}),
        ("--concurrency", {"type": int, "default": 1, "help": "survey requests run at once per worker "
                           "(COSMODM_UI_CONCURRENCY; default 1)"}),
        ("--pg-db", {"default": "ui_bench", "help": "PostgreSQL database to create and drop (default ui_bench)"}),
    ],
    "exposure": [
        ("--camera", {"default": "decam", "help": "camera to simulate (default decam: 62 CCDs)"}),
        ("--jobs", {"type": int, "default": 2, "help": "worker processes of the run (default 2)"}),
        ("--keep", {"default": None, "metavar": "DIR", "help": "keep the simulated night and the run's output here "
                    "(a night already there is reused)"}),
        ("--seed", {"type": int, "default": 1, "help": "simulation seed"}),
        ("--workdir", {"default": None, "help": "RAM-disk parent of the run (default $COSMODM_RAMDISK or "
                       "/dev/shm/cosmodm)"}),
        ("--density", {"default": "real", "choices": ("real", "crowded"), "help": "simulated sky (default real)"}),
        ("--ccds", {"type": int, "default": 0, "help": "run on the first N CCDs and scale to the exposure (0: all)"}),
        ("--previous-ccds", {"type": int, "default": 4, "help": "CCDs of the previous-configuration comparison "
                             "(default 4; 0: skip)"}),
        ("--io-ccds", {"default": "2,4", "help": "CCDs of the strace-counted I/O runs, comma-separated: two sizes "
                       "are extrapolated to the exposure along a line (default 2,4; 0: skip)"}),
        ("--exposures-per-node-night", {"type": int, "default": 10, "help": "exposures a node runs per night with "
                                        "the same calibrations: the calibration cache's staging is divided among "
                                        "them (default 10, conservative)"}),
    ],
    "clusters": [
        ("--n-clusters", {"type": int, "default": 48, "help": "injected clusters (default 48)"}),
        ("--n-null", {"type": int, "default": 16, "help": "empty positions as false candidates (default 16)"}),
        ("--seed", {"type": int, "default": 1, "help": "simulation seed"}),
        ("--out", {"default": None, "metavar": "DIR", "help": "plots and report.html here (default: a temp folder; "
                   "image level: candidates with a result.json there are not run again)"}),
        ("--level", {"default": "image", "choices": ("image", "catalogue"),
                     "help": "image (warps -> coadds -> SExtractor -> finder; default) or catalogue (no pixels)"}),
        ("--limit", {"type": int, "default": None, "help": "image level: run only the first N candidates of the "
                     "seeded random order (a fair sample)"}),
        ("--jobs", {"type": int, "default": 1, "help": "image level: worker processes (at most 2)"}),
        ("--tile-deg", {"type": float, "default": 0.4, "help": "image level: side of the target tile (deg)"}),
        ("--rescore", {"action": "store_true", "help": "image level: no chain; the current finder on the saved "
                       "catalogues of the candidates under --out that have a result.json (about 1 core-s each)"}),
        ("--report-dir", {"default": None, "metavar": "DIR", "help": "--rescore: report.html and the JSON here "
                          "(default --out; another folder for a run that is not yours)"}),
    ],
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="run a benchmark and print its figures")
    bs = p.add_subparsers(dest="bench_cmd", metavar="NAME", required=True)
    for name, (_target, text, _keys) in BENCHMARKS.items():
        b = bs.add_parser(name, help=text)
        b.add_argument("--json", action="store_true", help="print only the JSON line")
        for flag, kwargs in OPTIONS.get(name, []):
            b.add_argument(flag, **kwargs)
        b.set_defaults(func=_run, bench_name=name)


def _run(args: argparse.Namespace) -> int:
    target, _text, keys = BENCHMARKS[args.bench_name]
    module_name, func_name = target.split(":")
    options = {flag.lstrip("-").replace("-", "_"): None for flag, _ in OPTIONS.get(args.bench_name, [])}
    results = getattr(importlib.import_module(module_name), func_name)(**{k: getattr(args, k) for k in options})
    line = {k: results[k] for k in keys} if keys else results
    if not args.json:  # a benchmark module may print its own table (``format_results``)
        from cosmodm_ops.coadd.benchmarks import format_table

        print(getattr(importlib.import_module(module_name), "format_results", format_table)(results))
    print(json.dumps(line))
    return 0
