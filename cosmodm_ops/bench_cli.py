"""``cosmodm bench NAME [--json]``: run one benchmark of the installed package.

Each benchmark is an entry of :data:`BENCHMARKS`: a name and the ``module:function``
(returning a dict of figures) that runs it; the function is imported only when chosen.
With ``--json`` only the JSON line is printed, else a table and then the JSON line.
"""

from __future__ import annotations

import argparse
import importlib
import json

__all__ = ["BENCHMARKS", "register"]

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
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="run a benchmark and print its figures")
    bs = p.add_subparsers(dest="bench_cmd", metavar="NAME", required=True)
    for name, (_target, text, _keys) in BENCHMARKS.items():
        b = bs.add_parser(name, help=text)
        b.add_argument("--json", action="store_true", help="print only the JSON line")
        b.set_defaults(func=_run, bench_name=name)


def _run(args: argparse.Namespace) -> int:
    target, _text, keys = BENCHMARKS[args.bench_name]
    module_name, func_name = target.split(":")
    results = getattr(importlib.import_module(module_name), func_name)()
    line = {k: results[k] for k in keys} if keys else results
    if not args.json:
        from cosmodm_ops.coadd.benchmarks import format_table

        print(format_table(results))
    print(json.dumps(line))
    return 0
