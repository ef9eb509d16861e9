"""The calibration cache's part of ``cosmodm bench exposure``: what staging the calibrations costs a node-night.

With the node's calibration cache (:mod:`~cosmodm_ops.single_epoch.calibcache`) a node stages each
calibration file once per night (``cosmodm single-epoch stage-calib``, or the node's first exposure job)
and every exposure job after that reads the cache. The benchmark measures that staging as a job of its
own and counts it honestly:

- **CPU**: the staging job (its process tree, ``os.wait4``) on a fresh cache for the first ``a`` and ``b``
  CCDs, extrapolated to the whole exposure along the line through them (``calib_stage_cpu_s``).
- **bytes** on the output file system (``strace``, as the jobs): the staging job on a fresh cache for the
  largest size; it reads each calibration file whole, once (its sha256), whatever the CCDs, and writes
  nothing there (the cache is on the RAM disk). That run leaves the cache warm for the exposure jobs.
- **amortization**: a node-night runs ``exposures_per_node_night`` exposures (default 10, conservative: a
  DECam night holds about 100-200 exposures of the survey, spread over the site's nodes), so each exposure
  carries 1/N of the staging. ``core_minutes``, ``own_share`` and ``io_ratio_read_write`` are amortized;
  ``*_warm`` are the steady state (cache warm, no staging), ``*_cold`` the first exposure of a node-night
  (the whole staging on it).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

from astropy.io import fits as afits

from cosmodm_ops.astromatic.tools import run_measured

__all__ = ["EXPOSURES_PER_NODE_NIGHT", "amortize", "bench_cache_dir", "staging_cost"]

#: Exposures one node runs per night with the same calibrations (the staging is divided among them).
EXPOSURES_PER_NODE_NIGHT = 10


def bench_cache_dir(ram: Path) -> Path:
    """The benchmark's own calibration cache folder (on the RAM disk, removed at the end)."""
    return ram / "bench-calib-cache"


def _stage_job(raw: Path, night: Path, camera: str, ram: Path, ccds: list[int] | None,
               trace: Path | None = None) -> float:
    """``cosmodm single-epoch stage-calib`` on a fresh cache for ``ccds`` (None: all); its CPU seconds."""
    from cosmodm_ops.single_epoch.iotrace import traced_argv

    cache = bench_cache_dir(ram)
    shutil.rmtree(cache, ignore_errors=True)
    se: dict[str, Any] = {"calib_cache_path": str(cache)}
    if ccds is not None:
        se["only_ccds"] = ccds
    hdr = afits.getheader(raw, 0)
    band = str(hdr.get("BAND") or str(hdr.get("FILTER", "r")).split()[0])
    argv = ["env", f"COSMODM_CONFIG_OVERRIDES={json.dumps({'single_epoch': se})}", sys.executable, "-c",
            "import sys; from cosmodm_ops.cli import main; sys.exit(main(sys.argv[1:]))",
            "single-epoch", "stage-calib", "--calib", str(night / "calib"), "--band", band, "--camera", camera]
    code, stderr, cpu, _ = run_measured(traced_argv(argv, trace) if trace else argv, cwd=str(night),
                                        timeout=3600.0)
    if code != 0:
        msg = f"cosmodm single-epoch stage-calib exited {code}:\n{stderr[-2000:]}"
        raise RuntimeError(msg)
    return cpu


def staging_cost(raw: Path, night: Path, base: Path, camera: str, ram: Path, sizes: list[int], n_cam: int,
                 first_ccds: Any, trace: bool = True) -> dict[str, Any]:
    """CPU (line through the two sizes of ``sizes``, at ``n_cam``) and, with ``trace``, shared-disk bytes
    (traced, at the largest size) of staging the calibrations; leaves the cache warm for the largest size."""
    from cosmodm_ops.single_epoch.iotrace import count_strace

    lo, hi = min(sizes), max(sizes)
    cpu = {n: _stage_job(raw, night, camera, ram, first_ccds(raw, n) if n < n_cam else None)
           for n in sorted({lo, hi})}
    if lo == hi:
        per_ccd, fixed = cpu[hi] / hi, 0.0
    else:
        per_ccd = (cpu[hi] - cpu[lo]) / (hi - lo)
        fixed = max(0.0, cpu[lo] - lo * per_ccd)
    out: dict[str, Any] = {"calib_stage_cpu_s": round(fixed + n_cam * per_ccd, 2),
                           "calib_stage_cpu_per_ccd_s": round(per_ccd, 3),
                           "calib_stage_cpu_runs_s": {str(n): round(v, 2) for n, v in cpu.items()}}
    if not trace:  # no I/O comparison in this run: the staging is not traced (nor run a third time)
        return out
    log = base / "strace_stage.log"
    _stage_job(raw, night, camera, ram, first_ccds(raw, hi) if hi < n_cam else None, trace=log)
    c = count_strace(log, (base, night))
    log.unlink()
    return {**out, "calib_stage_read": c.read, "calib_stage_written": c.written, "calib_stage_io_ccds": hi,
            "calib_stage_method": f"cosmodm single-epoch stage-calib on a fresh cache: CPU on {lo} and {hi} CCDs "
                                  f"extrapolated to {n_cam}; bytes (strace) on {hi} CCDs: each calibration file is "
                                  "read whole, once, whatever the CCDs"}


def amortize(results: dict[str, Any], per_night: int) -> dict[str, Any]:
    """The amortized, warm and cold figures from the warm-cache figures in ``results`` and its staging cost:
    core-minutes, own share, I/O ratios (see the module docstring)."""
    out: dict[str, Any] = {"exposures_per_node_night": per_night}
    stage_cpu = results.get("calib_stage_cpu_s")
    if stage_cpu is None:
        return out
    warm_min = results["core_minutes"]
    read = f", {results['calib_stage_read'] / 1e9:.3f} GB read" if "calib_stage_read" in results else ""
    out["amortization"] = (f"calibration staging ({stage_cpu:.0f} s CPU{read}) once per node-night, divided by "
                           f"{per_night} exposures per node-night")
    out.update(core_minutes_warm=warm_min, core_minutes_cold=round(warm_min + stage_cpu / 60.0, 3),
               core_minutes=round(warm_min + stage_cpu / 60.0 / per_night, 3))
    total_s = warm_min * 60.0
    own_warm = results["own_share"] * total_s
    out.update(own_share_warm=results["own_share"],
               own_share=round((own_warm + stage_cpu / per_night) / (total_s + stage_cpu / per_night), 4),
               own_share_cold=round((own_warm + stage_cpu) / (total_s + stage_cpu), 4))
    if results.get("previous_core_minutes") is not None:
        out["previous_core_minutes_warm"] = results["previous_core_minutes"]
        out["previous_core_minutes"] = round(results["previous_core_minutes"] + stage_cpu / 60.0 / per_night, 3)
    if results.get("io_ours_read") is not None and "calib_stage_read" in results:
        o_r, o_w = results["io_ours_read"], results["io_ours_written"]
        n_rw = results["io_naive_read"] + results["io_naive_written"]
        s_r, s_w = results["calib_stage_read"], results["calib_stage_written"]
        amort = o_r + o_w + (s_r + s_w) / per_night
        out.update(io_ratio_read_write_warm=results["io_ratio_read_write"],
                   io_ratio_read_write=round(n_rw / amort, 2),
                   io_ratio_read_write_cold=round(n_rw / (o_r + o_w + s_r + s_w), 2),
                   io_ours_read_amortized=round(o_r + s_r / per_night),
                   io_ratio_written=round(results["io_naive_written"] / (o_w + s_w / per_night), 2) if o_w else None)
    return out
