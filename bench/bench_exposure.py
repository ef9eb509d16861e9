"""One full DECam exposure end to end (``cosmodm bench exposure``).

Simulates one 62-CCD DECam exposure (not timed), runs ``cosmodm single-epoch run --jobs 2`` on
it and reports core-minutes per exposure against DESDM's 320, the share of CPU spent in our own
code rather than SExtractor/SCAMP/PSFEx (target <= 10%), and bytes written to the output
filesystem against a naive run (target >= 50x less); since issue 18 also the density ratio to a real
exposure, the previous configuration on the same CCDs and the strace-counted disk I/O of ours against a naive
job. See :mod:`cosmodm_ops.single_epoch.exposure_bench`. Options: ``--camera``, ``--jobs``, ``--keep DIR``,
``--seed``, ``--workdir``, ``--density``, ``--ccds``, ``--previous-ccds``, ``--io-ccds``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from cosmodm_ops.bench_cli import OPTIONS
from cosmodm_ops.single_epoch.exposure_bench import exposure, format_table


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run it; print a table and one JSON line; return the figures."""
    p = argparse.ArgumentParser(prog="bench_exposure", description=__doc__.split("\n")[0])
    for flag, kwargs in OPTIONS["exposure"]:  # the same options as `cosmodm bench exposure`
        p.add_argument(flag, **kwargs)
    results = exposure(**vars(p.parse_args(argv if argv is not None else [])))
    print(format_table(results))
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
