"""Relative photometric calibration: efficiency against the Cramer-Rao bound, speed per tile and per survey.

Anchors: ``crlb_ratio`` <= 1.05 (RMS zeropoint error over synthetic realizations / the bound);
``tile_ms`` <= 50 (300 images x ~600 stars, building the system included); ``survey_100k_s``
<= 30 and ``survey_100k_peak_gb`` <= 6 on 2 cores (ENVIRONMENT.md: CHOLMOD/CG 2-6 s, building 35 s).
"""

from __future__ import annotations

import json

from cosmodm_ops.coadd.benchmarks import format_table, photcal

ANCHORS = {
    "crlb_ratio": "<= 1.05 (1 = efficient)",
    "tile_ms": "<= 50 ms",
    "survey_100k_s": "<= 30 s",
    "survey_100k_peak_gb": "<= 6 GB",
}


def main() -> dict:
    results = photcal(quick=True)
    print(format_table(results, ANCHORS))
    summary = {k: results[k] for k in ("crlb_ratio", "tile_ms", "survey_100k_s", "survey_100k_peak_gb")}
    print(json.dumps(summary))
    return results


if __name__ == "__main__":
    main()
