"""Benchmarks of the coadd science, importable from the installed package.

``bench/bench_photcal.py`` and ``cosmodm bench photcal --json`` call :func:`photcal`;
``bench/bench_psfhomog.py`` calls :func:`psfhomog`; ``bench/bench_tile.py`` and ``cosmodm bench
tile`` call :func:`tile` (a whole tile in one band, stage by stage). Each returns a dict of figures and
prints nothing; :func:`format_table` renders one for people. Anchors: the Cramer-Rao
bound (ratio 1 = efficient), 50 ms per 300-image tile, 30 s and 6 GB for a
100,000-image survey solve on 2 cores, 1 s per homogenized 2048 x 4096 CCD.

The survey solve runs in a fresh subprocess (``python -m cosmodm_ops.coadd.benchmarks
survey N``) so that its peak resident memory (``ru_maxrss``) is its own.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["format_table", "photcal", "psfhomog", "survey_solve", "tile", "tile_inputs"]


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


def tile_inputs(cache: Path, *, exposures: int = 6, band: str = "r", seed: int = 5) -> list[Path]:
    """Single-epoch manifests of a simulated decam-mini night in one band (made once, then reused).

    ``cosmodm sim night`` then ``cosmodm single-epoch run`` per exposure (SExtractor, SCAMP,
    PSFEx): the coadd gets the products it gets in production, from the same code. The
    folder ``cache/<exposures>x<band>-s<seed>`` holds them; a ``ready`` file marks it complete.
    """
    from cosmodm_ops.cli import main

    folder = cache / f"{exposures}x{band}-s{seed}"
    night = folder / "night"
    if not (folder / "ready").exists():
        folder.mkdir(parents=True, exist_ok=True)
        if main(["sim", "night", "--camera", "decam-mini", "--night", "2026-11-23", "--exposures", str(exposures),
                 "--bands", band, "--seed", str(seed), "--out", str(night)]) != 0:
            msg = f"bench tile: cosmodm sim night failed in {night}"
            raise RuntimeError(msg)
        for raw in sorted((night / "raw").glob("*.fits.fz")):
            out = folder / "se" / raw.name.split(".")[0]
            code = main(["single-epoch", "run", "--exposure", str(raw), "--calib", str(night / "calib"),
                         "--refcat", str(night / "refcat" / "astrometric.fits"), "--out", str(out)])
            if code not in (0, 3):  # 3: some CCDs failed; the others are inputs
                msg = f"bench tile: single-epoch run of {raw} exited {code}"
                raise RuntimeError(msg)
        (folder / "ready").write_text("ok\n")
    return sorted((folder / "se").glob("*/manifest.json"))


def _best_tile(manifests: list[Path], tiling_name: str) -> str:
    """The tile of the tiling that the most input CCD images touch."""
    from collections import Counter

    from cosmodm_ops.coadd.imageio import image_hdu_header, wcs_of
    from cosmodm_ops.coadd.tiling import ccd_corners, load_tiling
    from cosmodm_ops.manifest import read_manifest

    tiling = load_tiling(tiling_name)
    counts: Counter[str] = Counter()
    for mpath in manifests:
        for p in read_manifest(mpath).products:
            if p.kind == "image" and p.tags.get("ccd") is not None:
                hdr = image_hdu_header(mpath.parent / p.path)
                ra, dec = ccd_corners(wcs_of(hdr), int(hdr["NAXIS1"]), int(hdr["NAXIS2"]))
                counts.update(t.name for t in tiling.tiles_touching(ra, dec))
    if not counts:
        msg = f"bench tile: no input image touches a tile of {tiling_name}"
        raise RuntimeError(msg)
    return max(sorted(counts), key=lambda name: counts[name])


def tile(exposures: int = 6, band: str = "r", cache: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """A whole tile of the demo survey in one band through ``cosmodm coadd run``, stage by stage.

    Inputs: :func:`tile_inputs` (cached under ``cache``, default ``$COSMODM_BENCH_CACHE`` or
    ``var/bench``). The tile is the demo-mini tiling's tile touched by the most CCD images.
    Figures: the manifest's stage timings (seconds) and wall time, and two anchors measured in
    the same run: SWarp alone (the bare binary, same inputs, tile grid and threads) and a
    memory copy of one coadd-sized float32 image. ``ours_over_swarp`` is the whole band job
    over one bare SWarp run (the job runs SWarp twice); ``swarp_stage_over_bare`` is the
    plain-coadd stage (SWarp + compression + headers) over bare SWarp.
    """
    from cosmodm_ops.cli import main
    from cosmodm_ops.coadd.cli import inputs_from_manifests
    from cosmodm_ops.coadd.swarp import SwarpInput, swarp_command
    from cosmodm_ops.coadd.tiling import load_tiling
    from cosmodm_ops.config import load_config
    from cosmodm_ops.manifest import read_manifest

    root = Path(cache or os.environ.get("COSMODM_BENCH_CACHE") or "var/bench").resolve()
    t0 = time.perf_counter()
    manifests = tile_inputs(root / "tile-inputs", exposures=exposures, band=band)
    setup_s = time.perf_counter() - t0
    cfg = load_config("demo", site="local")
    tile_name = _best_tile(manifests, cfg.survey.tiling)
    the_tile = load_tiling(cfg.survey.tiling).tile(tile_name)
    threads = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="bench-tile.", dir=root) as tmp:
        out = Path(tmp) / "out"
        t0 = time.perf_counter()
        code = main(["coadd", "run", "--tile", tile_name, "--band", band, "--survey", "demo", "--out", str(out),
                     "--workdir", str(Path(tmp) / "work"), "--manifests", *map(str, manifests)])
        wall_s = time.perf_counter() - t0
        if code != 0:
            msg = f"bench tile: cosmodm coadd run exited {code}"
            raise RuntimeError(msg)
        m = read_manifest(out / "manifest.json")
        qa = json.loads((out / "qa.json").read_text())
        used = {im["name"] for im in qa["images"] if im["used"]}
        inputs, _ = inputs_from_manifests(manifests, the_tile, band=band)
        sw_in = [SwarpInput(i.files["image"].path, i.files["weight"].path, 1.0) for i in inputs if i.name in used]
        (Path(tmp) / "bare").mkdir()
        cmd = swarp_command(the_tile, sw_in, Path(tmp) / "bare.fits", Path(tmp) / "bare.weight.fits",
                            workdir=Path(tmp) / "bare", nthreads=threads, extra={"VERBOSE_TYPE": "QUIET"})
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, timeout=3600)
        swarp_s = time.perf_counter() - t0
    src = np.ones((the_tile.npix, the_tile.npix), np.float32)
    dst = np.empty_like(src)
    memcopy_ms = _best_ms(lambda: np.copyto(dst, src), 5)
    timings = {k: round(float(v), 3) for k, v in m.timings.items()}
    total = float(m.timings.get("total", wall_s))
    swarp_stages = float(m.timings.get("swarp", 0.0)) + float(m.timings.get("swarp_homog", 0.0))
    return {
        "tile": tile_name,
        "band": band,
        "tile_npix": the_tile.npix,
        "n_inputs": len(qa["images"]),
        "n_used": len(used),
        "n_swarp_inputs": len(sw_in),
        "n_not_homogenized": int(qa["summary"].get("n_not_homogenized") or 0),
        "input_ccd_shape": [int(cfg.camera.ccd_ny), int(cfg.camera.ccd_nx)],
        **{f"stage_{k}_s": v for k, v in timings.items() if k != "total"},
        "total_s": round(total, 3),
        "wall_s": round(wall_s, 3),
        "swarp_bare_s": round(swarp_s, 3),
        "memcopy_ms": round(memcopy_ms, 3),
        "ours_over_swarp": round(total / swarp_s, 2),
        "swarp_stage_over_bare": round(float(m.timings.get("swarp", 0.0)) / swarp_s, 2),
        "non_swarp_share": round(1.0 - swarp_stages / total, 3),
        "setup_s": round(setup_s, 1),
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
