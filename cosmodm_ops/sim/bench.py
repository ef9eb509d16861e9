"""Simulator benchmark: time per full DECam exposure, and raw compression against fpack.

``sim_decam()`` simulates one full-density DECam exposure (62 CCDs of 2160 x 4146) and writes
it as a raw ``.fits.fz``; it reports the wall time and the CPU time of that step (the sky
catalog and the calibrations are made once per night and timed apart). The target is
``<= 60 s`` wall on 2 cores; on a shared, loaded machine the CPU time divided by the
number of worker threads is the figure to compare. In the same run, one raw CCD is
written by us (lossless RICE, as in the raw file) and by ``fpack`` (lossless for integer
images), and both compression ratios are reported.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import fitsio
import numpy as np

__all__ = ["format_table", "sim_decam"]

TARGET_S = 60.0


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def sim_decam(threads: int = 2, seed: int = 1, workdir: str | None = None) -> dict[str, object]:
    """Run the benchmark; returns a dict of figures (seconds, ratios)."""
    from cosmodm_ops.config import load_config
    from cosmodm_ops.sim.exposure import simulate_exposure
    from cosmodm_ops.sim.night import make_sky, plan_night, primary_header, signature_source
    from cosmodm_ops.sim.writer import write_raw

    cfg = load_config("des", camera="decam")
    plan = plan_night(cfg, "2026-11-23", 1, ["r"], seed=seed)
    fp = plan.focal_plane
    t0, c0 = time.perf_counter(), _cpu()
    sky = make_sky(plan)
    sky_s = time.perf_counter() - t0
    sig = signature_source(plan)
    spec = plan.exposures[0]
    tmp = Path(tempfile.mkdtemp(prefix="bench_sim.", dir=workdir))
    try:
        t0, c0 = time.perf_counter(), _cpu()
        hdus = simulate_exposure(fp, spec, sky, sig, seed, threads=threads)
        sim_s, sim_cpu = time.perf_counter() - t0, _cpu() - c0
        t1, c1 = time.perf_counter(), _cpu()
        raw_path = write_raw(tmp / "decam.fits.fz", primary_header(plan, spec), hdus)
        write_s, write_cpu = time.perf_counter() - t1, _cpu() - c1
        total_s, total_cpu = time.perf_counter() - t0, _cpu() - c0
        raw_bytes = sum(d.nbytes for _, d, _ in hdus)
        file_ratio = raw_bytes / raw_path.stat().st_size

        # one CCD: ours (the raw writer) vs fpack on the same pixels
        name, data, hdr = hdus[len(hdus) // 2]
        ours = write_raw(tmp / "one.fits.fz", {}, [(name, data, hdr)])
        plain = tmp / "one.fits"
        with fitsio.FITS(str(plain), "rw", clobber=True) as f:
            f.write(data, header=[{"name": k, "value": v[0] if isinstance(v, tuple) else v} for k, v in hdr.items()])
        fpack = shutil.which("fpack")
        fpack_ratio = fpack_s = None
        if fpack:
            t2 = time.perf_counter()
            subprocess.run([fpack, "-O", str(tmp / "fp.fits.fz"), str(plain)], check=True, capture_output=True)
            fpack_s = time.perf_counter() - t2
            fpack_ratio = data.nbytes / (tmp / "fp.fits.fz").stat().st_size
        ours_ratio = data.nbytes / ours.stat().st_size
        check = fitsio.read(str(ours), ext=1)
        if not np.array_equal(check, data):
            msg = "our compressed CCD does not decode to the same pixels (lossless expected)"
            raise RuntimeError(msg)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "ccds": len(hdus),
        "threads": threads,
        "cores": os.cpu_count(),
        "exposure_s": round(total_s, 2),
        "exposure_cpu_s": round(total_cpu, 2),
        "exposure_cpu_per_thread_s": round(total_cpu / max(threads, 1), 2),
        "simulate_s": round(sim_s, 2),
        "simulate_cpu_s": round(sim_cpu, 2),
        "write_s": round(write_s, 2),
        "write_cpu_s": round(write_cpu, 2),
        "sky_catalog_s": round(sky_s, 2),
        "objects": len(sky),
        "target_s": TARGET_S,
        "raw_file_ratio": round(file_ratio, 3),
        "ccd_ratio_ours": round(ours_ratio, 3),
        "ccd_ratio_fpack": None if fpack_ratio is None else round(fpack_ratio, 3),
        "ratio_ours_over_fpack": None if fpack_ratio is None else round(ours_ratio / fpack_ratio, 4),
        "fpack_s": None if fpack_s is None else round(fpack_s, 3),
        "load_avg_1min": round(os.getloadavg()[0], 2),
    }


def format_table(results: dict[str, object]) -> str:
    """A two-column text table of the figures."""
    width = max(len(k) for k in results)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in results.items())
