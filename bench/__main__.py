"""``make bench``: run every ``bench/bench_*.py`` (or those named on the command line).

Each benchmark measures its named anchors in the same run (ccdproc, fpack, a memory copy,
the Cramer-Rao bound) and prints a table and one JSON line; this runner adds a final JSON
line with every result, and exits non-zero if a benchmark raised. Options after ``--`` go to
the named benchmarks, e.g. ``python -m bench batch -- --jobs 500 --sleep 120``.
"""

from __future__ import annotations

import importlib
import json
import sys
import traceback
from pathlib import Path


def main(argv: list[str]) -> int:
    here = Path(__file__).resolve().parent
    extra: list[str] = []
    if "--" in argv:  # options after "--" go to every named benchmark's main(argv)
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    names = argv or sorted(p.stem for p in here.glob("bench_*.py"))
    results: dict[str, object] = {}
    failed = []
    for name in names:
        name = name if name.startswith("bench_") else f"bench_{name}"
        print(f"\n=== {name} ===", flush=True)
        try:
            module = importlib.import_module(f"bench.{name}")
            results[name] = module.main(extra) if extra else module.main()
        except Exception:  # noqa: BLE001 - report every benchmark, then fail
            traceback.print_exc()
            failed.append(name)
    print(json.dumps({"bench": results, "failed": failed}, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
