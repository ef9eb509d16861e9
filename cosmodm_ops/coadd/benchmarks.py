"""Benchmarks of the coadd science, importable from the installed package.

``bench/bench_photcal.py`` and ``cosmodm bench photcal --json`` call :func:`photcal`;
``bench/bench_psfhomog.py`` calls :func:`psfhomog`. Each returns a dict of figures and
prints nothing; :func:`format_table` renders one for people. Anchors: the Cramer-Rao
bound (ratio 1 = efficient), 50 ms per 300-image tile, 30 s and 6 GB for a
100,000-image survey solve on 2 cores, 1 s per homogenized 2048 x 4096 CCD.

The survey solve runs in a fresh subprocess (``python -m cosmodm_ops.coadd.benchmarks
survey N``) so that its peak resident memory (``ru_maxrss``) is its own.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from typing import Any

import numpy as np

__all__ = ["format_table", "photcal", "psfhomog", "survey_solve"]


def _best_ms(func: Any, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        func()
        times.append(time.perf_counter() - t0)
    return min(times) * 1000.0


def survey_solve(n_images: int = 100_000, stars_per_image: float = 60.0, seed: int = 0) -> dict[str, float]:
    """Generate an ubercal-like survey and solve it; time of the solve (build + CG) and peak RSS of this process."""
    from cosmodm_ops.coadd.photcal import solve_survey
    from cosmodm_ops.coadd.synthetic import photcal_survey

    det, zp_true = photcal_survey(n_images, stars_per_image, seed=seed)
    t0 = time.perf_counter()
    zp = solve_survey(det.image, det.star, det.mag, det.magerr, det.n_images)
    seconds = time.perf_counter() - t0
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # Linux: KiB
    return {
        "n_images": float(det.n_images),
        "n_detections": float(len(det.image)),
        "seconds": seconds,
        "peak_gb": peak_gb,
        "rms_error_mmag": float(np.nanstd(zp - zp_true) * 1000.0),
    }


def photcal(quick: bool = True) -> dict[str, Any]:
    """Relative-calibration figures: CRLB ratio, per-tile solve time, 100k-image survey solve.

    Parameters
    ----------
    quick : bool
        50 CRLB realizations of the 300-image tile (else 200).
    """
    from cosmodm_ops.coadd import photcal as pc
    from cosmodm_ops.coadd import synthetic as syn

    det, truth = syn.photcal_tile(300, 600, seed=0)
    tile_ms = _best_ms(lambda: pc.solve_zeropoints(det, errors=False), 7)
    tile_err_ms = _best_ms(lambda: pc.solve_zeropoints(det, errors=True), 3)
    tables = syn.photcal_tables(det, truth)
    match_ms = _best_ms(lambda: pc.match_stars(tables, 1.0), 3)
    calib_ms = _best_ms(lambda: pc.calibrate(det), 3)
    ratio, crlb = syn.photcal_crlb_ratio(50 if quick else 200, n_images=300, stars_per_image=600)
    proc = subprocess.run(
        [sys.executable, "-m", "cosmodm_ops.coadd.benchmarks", "survey", "100000"],
        capture_output=True,
        text=True,
        check=True,
    )
    survey = json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        "crlb_ratio": round(ratio, 4),
        "crlb_rms_mmag": round(crlb * 1000.0, 4),
        "tile_ms": round(tile_ms, 1),
        "tile_with_errors_ms": round(tile_err_ms, 1),
        "tile_match_ms": round(match_ms, 1),
        "tile_calibrate_ms": round(calib_ms, 1),
        "tile_detections": len(det.image),
        "survey_100k_s": round(survey["seconds"], 2),
        "survey_100k_peak_gb": round(survey["peak_gb"], 2),
        "survey_images": int(survey["n_images"]),
        "survey_detections": int(survey["n_detections"]),
        "survey_rms_error_mmag": round(survey["rms_error_mmag"], 3),
    }


def psfhomog(shape: tuple[int, int] = (4096, 2048), cells: tuple[int, int] = (16, 8)) -> dict[str, Any]:
    """PSF homogenization of one CCD-sized image with a PSF varying over the field."""
    from cosmodm_ops.coadd import psfhomog as ph
    from cosmodm_ops.coadd.synthetic import psfex_like_model

    model = psfex_like_model(shape)
    rng = np.random.default_rng(0)
    image = rng.normal(0.0, 10.0, shape).astype(np.float32)
    weight = np.full(shape, 0.01, np.float32)
    target = ph.moffat_psf(1.2 * ph.psf_fwhm(ph.psf_at(model, shape[1] / 2, shape[0] / 2)), 2.5, 41)
    t0 = time.perf_counter()
    kernels = ph.cell_kernels(model, shape, target, cells)
    kern_ms = (time.perf_counter() - t0) * 1000.0
    img_ms = _best_ms(lambda: ph.apply_kernels(image, kernels), 2)
    both_ms = _best_ms(lambda: ph.homogenize(image, weight, model, target, cells=cells), 2)
    return {
        "shape": list(shape),
        "cells": list(cells),
        "kernels_ms": round(kern_ms, 1),
        "image_ms": round(img_ms, 1),
        "image_and_weight_ms": round(both_ms, 1),
    }


def format_table(results: dict[str, Any], anchors: dict[str, str] | None = None) -> str:
    """A two- or three-column text table of a benchmark's figures."""
    anchors = anchors or {}
    width = max(len(k) for k in results)
    lines = [f"{'figure':<{width}}  {'value':>12}  anchor", "-" * (width + 30)]
    for key, value in results.items():
        lines.append(f"{key:<{width}}  {value!s:>12}  {anchors.get(key, '')}")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover - the subprocess entry of photcal()
    if len(sys.argv) >= 3 and sys.argv[1] == "survey":
        print(json.dumps(survey_solve(int(sys.argv[2]))))
