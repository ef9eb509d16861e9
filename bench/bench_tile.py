"""A whole tile in one band, timed stage by stage (issue 7, "Speed").

The demo survey's tile (demo-mini tiling, 0.12 deg, 1642 x 1642 pixels at 0.263") that a
simulated decam-mini night in r touches most, through ``cosmodm coadd run``; the inputs are
made once by the simulator and the single-epoch pipeline and cached (``$COSMODM_BENCH_CACHE``,
default ``var/bench``). Anchors in the same run: SWarp alone on the same inputs and a memory
copy of one coadd-sized image. Options: ``python -m bench tile -- --exposures N``.
"""

from __future__ import annotations

import argparse
import json

from cosmodm_ops.coadd.benchmarks import format_table, tile

ANCHORS = {
    "swarp_bare_s": "anchor: SWarp alone, same inputs, grid and threads",
    "memcopy_ms": "anchor: np.copyto of one coadd-sized float32 image",
    "ours_over_swarp": "whole band job / one bare SWarp (the job runs SWarp twice)",
    "swarp_stage_over_bare": "plain-coadd stage (SWarp + RICE + headers) / bare SWarp",
    "non_swarp_share": "share of the job outside the two SWarp stages",
    "setup_s": "making the inputs (0 when cached; not part of the figures)",
}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="bench_tile")
    p.add_argument("--exposures", type=int, default=6, help="simulated exposures in the band (default 6)")
    p.add_argument("--band", default="r")
    args = p.parse_args(argv or [])
    results = tile(exposures=args.exposures, band=args.band)
    print(format_table(results, ANCHORS))
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    main()
