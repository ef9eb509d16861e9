"""One exposure end to end (``cosmodm bench exposure``): core-minutes, own-code share, bytes written.

``exposure()`` simulates one exposure of a camera (``cosmodm sim night``; not timed), then runs
``cosmodm single-epoch run`` on it as its own process, as a batch job would, with ``--jobs``
workers and the RAM disk as work folder, and reports:

- **wall** seconds and **CPU** seconds of the whole job process tree (``os.wait4`` of the job:
  the job process, its worker processes and every tool they ran, interpreter start-up included).
  The Astromatic binaries' part (SExtractor, SCAMP, PSFEx) comes from the manifest's ``cpu``
  block, which has each tool run's own CPU; our own code is the rest.
- **core-minutes** per exposure: CPU / 60 (``core_min``), and wall x jobs / 60
  (``core_min_wall``, inflated when the machine is shared), against the original DESDM figure of
  a 32-core node for about 10 minutes, 320 core-minutes (``core_min_ratio_vs_desdm`` = ours / 320).
- **own-code share** = own CPU / total CPU (target <= 10%), and the largest own-code stages.
- **bytes** written to the output filesystem (the manifest's ``bytes.output``: every product,
  compressed as filed, and qa.json) against a *naive* run that keeps its uncompressed intermediates
  on the output filesystem: every byte the run wrote to the RAM disk (``bytes.ramdisk``: the
  decompressed raw file, the staged calibration copies, the per-CCD image/weight/flag files,
  catalogs, PSF models, SCAMP's files) plus every product at its uncompressed size (RICE images
  counted at their pixel size). Target: at least 50x less.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from astropy.io import fits as afits

from cosmodm_ops.astromatic.tools import run_measured

if TYPE_CHECKING:
    from cosmodm_ops.manifest import Manifest

__all__ = ["DESDM_CORE_MIN", "exposure", "uncompressed_bytes"]

#: The original system: a 32-core node for about 10 minutes per DECam exposure.
DESDM_CORE_MIN = 320.0
#: Targets of issue 3.
OWN_SHARE_TARGET = 0.10
BYTES_RATIO_TARGET = 50.0
NIGHT = "2026-11-23"


def uncompressed_bytes(path: str | os.PathLike[str]) -> int:
    """Size of a file with every tile-compressed image HDU counted at its uncompressed (FITS-padded) size.

    Non-FITS files (JSON, SCAMP ``.head``) count at their size. Only the compressed HDUs' headers
    are read (``disable_image_compression``): no pixel is decompressed.
    """
    path = Path(path)
    total = path.stat().st_size
    if not path.name.endswith((".fits", ".fits.fz", ".fz", ".psf")):
        return total
    with afits.open(path, disable_image_compression=True, memmap=True, lazy_load_hdus=False) as hdul:
        for i, hdu in enumerate(hdul):
            hdr = hdu.header
            if not hdr.get("ZIMAGE", False):
                continue
            pixels = math.prod(int(hdr[f"ZNAXIS{k}"]) for k in range(1, int(hdr["ZNAXIS"]) + 1))
            nbytes = pixels * abs(int(hdr["ZBITPIX"])) // 8
            info = hdul.fileinfo(i)
            assert info is not None
            total += 2880 * math.ceil(nbytes / 2880) - int(info["datSpan"])
    return total


def _job_argv(raw: Path, night: Path, out: Path, jobs: int, workdir: Path) -> list[str]:
    return [sys.executable, "-c", "import sys; from cosmodm_ops.cli import main; sys.exit(main(sys.argv[1:]))",
            "single-epoch", "run", "--exposure", str(raw), "--calib", str(night / "calib"),
            "--refcat", str(night / "refcat" / "astrometric.fits"), "--out", str(out), "--jobs", str(jobs),
            "--workdir", str(workdir)]


def _run_job(argv: list[str]) -> tuple[int, float, float, str]:
    """Run the job; (exit code, wall s, CPU s of its whole process tree, stderr tail)."""
    t0 = time.perf_counter()
    code, stderr, cpu_s, _ = run_measured(argv, cwd=os.getcwd(), timeout=6 * 3600.0)
    tail = "\n".join(stderr.strip().splitlines()[-10:])
    return code, time.perf_counter() - t0, cpu_s, tail


def exposure(camera: str = "decam", jobs: int = 2, keep: str | None = None, seed: int = 1,
             workdir: str | None = None) -> dict[str, Any]:
    """Run the benchmark; returns a dict of figures (seconds, core-minutes, bytes, ratios).

    Parameters
    ----------
    camera : str
        Camera to simulate (``decam``: 62 CCDs; ``decam-mini`` for a quick look).
    jobs : int
        Worker processes of the single-epoch run.
    keep : path, optional
        Folder to keep the simulated night and the run's output in (else a temp folder, removed).
    seed : int
        Simulation seed.
    workdir : path, optional
        Parent of the run's RAM-disk folder (default ``$COSMODM_RAMDISK``, else ``/dev/shm/cosmodm``).
    """
    from cosmodm_ops.manifest import read_manifest

    base = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="bench_exposure."))
    base.mkdir(parents=True, exist_ok=True)
    ram = Path(workdir or os.environ.get("COSMODM_RAMDISK") or "/dev/shm/cosmodm")
    try:
        night, out = base / "night", base / "se"
        if out.exists():
            shutil.rmtree(out)  # a fresh run, not a re-run that skips CCDs
        raw = _simulated_raw(night, camera, seed)
        code, wall, cpu_total, tail = _run_job(_job_argv(raw, night, out, jobs, ram))
        if not (out / "manifest.json").exists():
            msg = f"cosmodm single-epoch run exited {code} without a manifest:\n{tail}"
            raise RuntimeError(msg)
        results = _figures(read_manifest(out / "manifest.json"), out, camera=camera, jobs=jobs, code=code,
                           wall=wall, cpu_total=cpu_total)
        if keep:
            results["kept"] = str(base)
        return results
    finally:
        if not keep:
            shutil.rmtree(base, ignore_errors=True)


def _simulated_raw(night: Path, camera: str, seed: int) -> Path:
    """The raw exposure of ``camera`` in ``night`` (simulated with ``cosmodm sim night`` unless already there)."""
    from cosmodm_ops.cli import EXIT_OK, main

    raws = sorted((night / "raw").glob(f"{camera}_*.fits.fz")) if night.exists() else []
    if not raws:
        argv = ["sim", "night", "--camera", camera, "--night", NIGHT, "--exposures", "1", "--bands", "r",
                "--seed", str(seed), "--no-progress", "--out", str(night)]
        if main(argv) != EXIT_OK:
            msg = f"cosmodm {' '.join(argv)} failed"
            raise RuntimeError(msg)
        raws = sorted((night / "raw").glob(f"{camera}_*.fits.fz"))
    return raws[0]


def _figures(m: Manifest, out: Path, *, camera: str, jobs: int, code: int, wall: float, cpu_total: float
             ) -> dict[str, Any]:
    """The benchmark's figures from the job's manifest ``m`` and its measured wall and CPU seconds."""
    cpu = m.cpu
    astro = float(cpu["astromatic_s"])
    own = cpu_total - astro
    products_plain = sum(uncompressed_bytes(out / p.path) for p in m.products)
    bytes_output = int(m.bytes["output"])
    bytes_naive = int(m.bytes["ramdisk"]) + products_plain
    core_min = cpu_total / 60.0
    n_ok = sum(1 for u in m.units if u.state == "ok")
    top = list(cpu["own_stages"].items())[:6]
    return {
        "camera": camera,
        "jobs": jobs,
        "exit_code": code,
        "n_ccds": len(m.units),
        "n_ccds_ok": n_ok,
        "wall_s": round(wall, 2),
        "cpu_total_s": round(cpu_total, 2),
        "cpu_own_s": round(own, 2),
        "cpu_astromatic_s": round(astro, 2),
        "cpu_sextractor_s": cpu["sextractor_s"],
        "cpu_psfex_s": cpu["psfex_s"],
        "cpu_scamp_s": cpu["scamp_s"],
        "cpu_in_run_exposure_s": cpu["total_s"],
        "core_min": round(core_min, 3),
        "core_min_wall": round(wall * jobs / 60.0, 3),
        "core_min_desdm": DESDM_CORE_MIN,
        "core_min_ratio_vs_desdm": round(core_min / DESDM_CORE_MIN, 4),
        "own_share": round(own / cpu_total, 4) if cpu_total > 0 else None,
        "own_share_target": OWN_SHARE_TARGET,
        "own_top_stages_s": dict(top),
        "bytes_output": bytes_output,
        "bytes_ramdisk": int(m.bytes["ramdisk"]),
        "bytes_products_uncompressed": products_plain,
        "bytes_naive": bytes_naive,
        "bytes_ratio": round(bytes_naive / bytes_output, 2) if bytes_output else None,
        "bytes_ratio_target": BYTES_RATIO_TARGET,
        "timings_s": {k: m.timings[k] for k in ("stage", "phase_a_wall", "scamp", "phase_c_wall", "total")
                      if k in m.timings},
        "load_avg_1min": round(os.getloadavg()[0], 2),
        "cores": os.cpu_count(),
    }


def format_table(results: dict[str, Any]) -> str:
    """The figures, with the anchors and targets beside them."""
    from cosmodm_ops.coadd.benchmarks import format_table as table

    anchors = {
        "core_min": f"DESDM {DESDM_CORE_MIN:.0f} core-min per exposure",
        "core_min_ratio_vs_desdm": "ours / DESDM (< 1: fewer core-minutes)",
        "own_share": f"target <= {OWN_SHARE_TARGET:.0%}",
        "bytes_ratio": f"naive / ours, target >= {BYTES_RATIO_TARGET:.0f}x",
        "core_min_wall": "wall x jobs (shared machine: inflated)",
    }
    flat = {k: (json.dumps(v) if isinstance(v, dict) else v) for k, v in results.items()}
    return table(flat, anchors)
