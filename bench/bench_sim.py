"""Simulator speed and raw compression (``cosmodm bench sim``).

Time per full DECam exposure (62 CCDs, target <= 60 s on 2 cores; wall and CPU time), and the
lossless compression ratio of one raw CCD against ``fpack`` on the same pixels, in one run.
Prints a table and one JSON line; see :mod:`cosmodm_ops.sim.bench`.
"""

from __future__ import annotations

import json

from cosmodm_ops.sim.bench import format_table, sim_decam


def main() -> dict:
    results = sim_decam()
    print(format_table(results))
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
