"""``cosmodm bench NAME [--json]``: run one benchmark of the installed package.

Each benchmark is an entry of :data:`BENCHMARKS`: a name and the ``module:function``
(returning a dict of figures) that runs it; the function is imported only when chosen.
With ``--json`` only the JSON line is printed, else a table and then the JSON line.
(Written on branch ``single-epoch`` with the ``detrend`` entry only; the ``photcal``
branch has the same table with its own entries: merge the two tables.)
"""

from __future__ import annotations

import argparse
import importlib
import json
from typing import Any

__all__ = ["BENCHMARKS", "register"]

#: name -> (``module:function`` returning a dict, help text, keys of the JSON line; empty = all)
BENCHMARKS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "detrend": (
        "cosmodm_ops.single_epoch.bench:detrend",
        "raw 2160 x 4146 CCD: crosstalk, overscan, trim, gain, bias, flat vs ccdproc and a memory copy",
        ("ours_ms", "ccdproc_ms", "memcopy_ms"),
    ),
}


def register(sub: Any) -> None:
    """Add the ``bench`` command group."""
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
        width = max(len(k) for k in results)
        print("\n".join(f"{k:<{width}}  {v}" for k, v in results.items()))
    print(json.dumps(line))
    return 0
