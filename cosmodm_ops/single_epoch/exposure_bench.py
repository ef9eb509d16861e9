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

Issue 18 added, all in the same call:

- the **density** of the simulated sky against a real DES-wide exposure at the same depth
  (:mod:`cosmodm_ops.single_epoch.exposure_density`; ``density_ratio_to_real``), SExtractor's
  detections per CCD, and the **accuracies** against truth (astrometry, FWHM, zeropoint,
  star/galaxy separation);
- the **previous configuration** (PSF_SIZE 35, pass 1 at the pass-2 threshold: the settings before
  issue 18, through ``$COSMODM_CONFIG_OVERRIDES``) on the first ``previous_ccds`` CCDs of the same
  exposure, and ours on the same CCDs: ``previous_core_minutes`` = ours per exposure x that ratio;
- **disk I/O by syscall tracing** (:mod:`cosmodm_ops.single_epoch.iotrace`): bytes every process
  of the job read and wrote on the output file system, for our job and a *naive* job (work folder on
  the shared disk, products uncompressed), on the first ``io_ccds`` CCDs (two sizes: each job's bytes
  extrapolated to the whole exposure along the line through them, :func:`io_line`);
  ``io_ratio_read_write`` and ``io_ratio_written`` are naive / ours for the whole exposure.

``ccds`` < the camera's CCDs runs every job on the first ``ccds`` CCDs (a file with those HDUs
only) and scales CPU to the whole exposure by n_ccds_camera / ccds (start-up and SCAMP included,
so slightly pessimistic): the figures say ``scaled_from_ccds``.
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
from cosmodm_ops.single_epoch.exposure_staging import (
    EXPOSURES_PER_NODE_NIGHT,
    amortize,
    bench_cache_dir,
    staging_cost,
)

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


#: The configuration before issue 18, for the same-run comparison.
PREVIOUS_CONFIG = {"single_epoch": {"psf_size": 35, "pass1_detect_thresh": None}}
#: The naive job's configuration: products uncompressed, no calibration cache (its work folder is on the
#: shared disk too, so it copies the calibration files there and every worker decompresses its HDUs).
NAIVE_CONFIG = {"single_epoch": {"compress_products": False, "calib_cache": False}}
CORE_MIN_TARGET = 15.0
OWN_SHARE_TARGET_18 = 0.05


def _job_argv(raw: Path, night: Path, out: Path, jobs: int, workdir: Path, overrides: dict | None = None
              ) -> list[str]:
    env = ["env", f"COSMODM_CONFIG_OVERRIDES={json.dumps(overrides)}"] if overrides else []
    return [*env, sys.executable, "-c",
            "import sys; from cosmodm_ops.cli import main; sys.exit(main(sys.argv[1:]))",
            "single-epoch", "run", "--exposure", str(raw), "--calib", str(night / "calib"),
            "--refcat", str(night / "refcat" / "astrometric.fits"), "--out", str(out), "--jobs", str(jobs),
            "--workdir", str(workdir)]


def _run_job(argv: list[str]) -> tuple[int, float, float, str]:
    """Run the job; (exit code, wall s, CPU s of its whole process tree, stderr tail)."""
    t0 = time.perf_counter()
    code, stderr, cpu_s, _ = run_measured(argv, cwd=os.getcwd(), timeout=6 * 3600.0)
    tail = "\n".join(stderr.strip().splitlines()[-10:])
    return code, time.perf_counter() - t0, cpu_s, tail


def _first_ccds(raw: Path, n: int) -> list[int]:
    """CCDNUMs of the first ``n`` CCD HDUs of ``raw`` (the camera needs every CCD in the file: a run on part of
    an exposure reads all and processes these, ``single_epoch.only_ccds``)."""
    with afits.open(raw, disable_image_compression=True) as hdul:
        return [int(h.header.get("CCDNUM", i + 1)) for i, h in enumerate(hdul[1:n + 1])]


def _with(overrides: dict | None, only: list[int] | None, ram: Path) -> dict:
    """``overrides`` plus ``single_epoch.only_ccds`` and the benchmark's calibration cache folder."""
    out = json.loads(json.dumps(overrides or {}))
    se = out.setdefault("single_epoch", {})
    se.setdefault("calib_cache_path", str(bench_cache_dir(ram)))
    if only is not None:
        se["only_ccds"] = only
    return out


def _job(raw: Path, night: Path, out: Path, jobs: int, workdir: Path, overrides: dict | None = None,
         trace: Path | None = None) -> dict[str, Any]:
    """One job: exit code, wall, CPU and its manifest (raises when it left none)."""
    from cosmodm_ops.manifest import read_manifest
    from cosmodm_ops.single_epoch.iotrace import traced_argv

    if out.exists():
        shutil.rmtree(out)  # a fresh run, not a re-run that skips CCDs
    workdir.mkdir(parents=True, exist_ok=True)
    argv = _job_argv(raw, night, out, jobs, workdir, overrides)
    code, wall, cpu, tail = _run_job(traced_argv(argv, trace) if trace else argv)
    if not (out / "manifest.json").exists():
        msg = f"cosmodm single-epoch run exited {code} without a manifest:\n{tail}"
        raise RuntimeError(msg)
    return {"code": code, "wall": wall, "cpu": cpu, "manifest": read_manifest(out / "manifest.json")}


def exposure(camera: str = "decam", jobs: int = 2, keep: str | None = None, seed: int = 1,
             workdir: str | None = None, density: str = "real", ccds: int = 0, previous_ccds: int = 4,
             io_ccds: str | int = "2,4", exposures_per_node_night: int = EXPOSURES_PER_NODE_NIGHT) -> dict[str, Any]:
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
    density : str
        Simulated sky: ``real`` (DES wide) or ``crowded`` (the earlier default).
    ccds : int
        Run on the first ``ccds`` CCDs only and scale to the exposure (0: all).
    previous_ccds : int
        CCDs of the previous-configuration comparison (0: skip).
    io_ccds : str
        CCDs of the traced I/O runs, comma-separated (two sizes: extrapolated along the line; 0: skip).
    exposures_per_node_night : int
        Exposures among which a node-night's calibration staging is divided
        (:mod:`~cosmodm_ops.single_epoch.exposure_staging`).
    """
    from cosmodm_ops.config import load_config
    from cosmodm_ops.single_epoch.exposure_anchors import format_anchors
    from cosmodm_ops.single_epoch.exposure_density import accuracies, detections, sky_density

    contract = dict.fromkeys(("previous_core_minutes", "io_ratio_read_write", "io_ratio_written",  # None: skipped
                              "io_ratio_read_write_warm", "io_ratio_read_write_cold"))
    base = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="bench_exposure."))
    base.mkdir(parents=True, exist_ok=True)
    ram = Path(workdir or os.environ.get("COSMODM_RAMDISK") or "/dev/shm/cosmodm")
    try:
        night = base / "night"
        raw = _simulated_raw(night, camera, seed, density)
        cfg = load_config("des" if camera == "decam" else "demo", camera=camera)
        n_cam = _n_ccds(raw)
        n_run = ccds if 0 < ccds < n_cam else n_cam
        only = _first_ccds(raw, n_run) if n_run < n_cam else None
        used = {n_run, min(previous_ccds, n_cam) if previous_ccds else n_run, *_io_sizes(io_ccds, n_cam)}
        # the node's calibration cache: staged by a job of its own (measured), warm for every job below
        staging = staging_cost(raw, night, base, camera, ram, sorted(used), n_cam, _first_ccds,
                               trace=bool(_io_sizes(io_ccds, n_cam)))
        ours = _job(raw, night, base / "se", jobs, ram, _with(None, only, ram))
        results = {**contract, **_figures(ours["manifest"], base / "se", camera=camera, jobs=jobs,
                                           code=ours["code"], wall=ours["wall"], cpu_total=ours["cpu"])}
        core_min, own_share = _scaled(ours, n_cam / n_run)
        results.update(n_ccds_camera=n_cam, scaled_from_ccds=n_run if n_run < n_cam else None,
                       core_minutes=core_min, own_share=own_share, own_share_measured=results["own_share"],
                       core_minutes_target=CORE_MIN_TARGET, own_share_target=OWN_SHARE_TARGET_18,
                       uptime_load=os.getloadavg())
        spread_cut = cfg.single_epoch.spread_model_star_max
        results["density"] = sky_density(night, cfg)
        results["density_ratio_to_real"] = results["density"]["density_ratio_to_real"]
        results["detections_per_ccd"] = detections(base / "se", spread_cut)
        results["accuracy"] = accuracies(night, base / "se", spread_cut)
        if previous_ccds:
            n_prev = min(previous_ccds, n_cam)
            results.update(_previous(raw, night, base, jobs, ram, n_prev, n_cam, ours if n_prev == n_run else None))
            results.update(linear_fit(n_cam, n_run, ours["cpu"], results["previous_ccds"],
                                      results["ours_same_ccds_cpu_s"], results["previous_cpu_s"]))
        if sizes := _io_sizes(io_ccds, n_cam):
            results.update(_io(raw, night, base, jobs, ram, sizes, n_cam))
        results.update(format_anchors(base / "se", raw, n_cam, results))
        results.update(staging)
        results.update(amortize(results, exposures_per_node_night))
        if keep:  # every figure (--json prints only the contract's keys)
            results["kept"] = str(base)
            (base / "bench_exposure.json").write_text(json.dumps(results, indent=1, default=str))
        return results
    finally:
        shutil.rmtree(bench_cache_dir(ram), ignore_errors=True)
        if not keep:
            shutil.rmtree(base, ignore_errors=True)


def _io_sizes(io_ccds: str | int, n_cam: int) -> list[int]:
    return sorted({min(int(n), n_cam) for n in str(io_ccds).split(",") if int(n) > 0}) if io_ccds else []


#: Own-code stages done once per exposure whatever the number of CCDs processed (not scaled).
_PER_EXPOSURE = ("stage", "read_inputs", "astrometry")


def _scaled(job: dict[str, Any], scale: float) -> tuple[float, float]:
    """(core-minutes, own share) of the whole exposure from a run on 1/``scale`` of its CCDs.

    The staging of the inputs (the whole raw file and calibrations are staged whatever the CCDs),
    reading them and the astrometry's own part count once; everything else -- the tools (SCAMP
    included) and our per-CCD stages, and the unattributed rest (interpreter start-up: pessimistic) --
    scales with the CCDs.
    """
    cpu = job["manifest"].cpu
    fixed = sum(float(cpu["own_stages"].get(k, 0.0)) for k in _PER_EXPOSURE)
    astro = float(cpu["astromatic_s"])
    own = job["cpu"] - astro
    total = fixed + (job["cpu"] - fixed) * scale
    own_scaled = fixed + (own - fixed) * scale
    return round(total / 60.0, 3), round(own_scaled / total, 4)


def linear_fit(n_cam: int, n_a: int, cpu_a: float, n_b: int, cpu_b: float, cpu_prev_b: float) -> dict[str, Any]:
    """Whole-exposure core-minutes from our runs on ``n_a`` and ``n_b`` CCDs (a straight line: a per-exposure
    part plus a per-CCD part), and the previous configuration's on ``n_b`` CCDs with the same per-exposure part.

    Empty when ``n_a`` is the whole exposure (nothing to extrapolate: the run's own figure stands) or the two
    sizes are equal.
    """
    if n_a >= n_cam or n_a == n_b:
        return {}
    per_ccd = (cpu_a - cpu_b) / (n_a - n_b)
    fixed = max(0.0, cpu_a - n_a * per_ccd)
    prev_per_ccd = (cpu_prev_b - fixed) / n_b
    return {"core_minutes": round((fixed + n_cam * per_ccd) / 60.0, 3),
            "previous_core_minutes": round((fixed + n_cam * prev_per_ccd) / 60.0, 3),
            "cpu_per_ccd_s": round(per_ccd, 2), "cpu_per_exposure_s": round(fixed, 2),
            "previous_cpu_per_ccd_s": round(prev_per_ccd, 2),
            "core_minutes_method": f"line through our runs on {n_b} and {n_a} CCDs, extrapolated to {n_cam}"}


def _n_ccds(raw: Path) -> int:
    with afits.open(raw, disable_image_compression=True) as hdul:
        return len(hdul) - 1


def _previous(raw: Path, night: Path, base: Path, jobs: int, ram: Path, n: int, n_cam: int,
              ours: dict[str, Any] | None = None) -> dict[str, Any]:
    """The previous configuration and ours (``ours``, or a new run) on the same first ``n`` CCDs: CPU and ratio."""
    only = _first_ccds(raw, n) if n < n_cam else None
    prev = _job(raw, night, base / "se_previous", jobs, ram, _with(PREVIOUS_CONFIG, only, ram))
    now = ours or _job(raw, night, base / "se_same_ccds", jobs, ram, _with(None, only, ram))
    ratio = prev["cpu"] / now["cpu"]
    return {"previous_ccds": n, "previous_cpu_s": round(prev["cpu"], 2), "ours_same_ccds_cpu_s": round(now["cpu"], 2),
            "previous_cpu_sextractor_s": prev["manifest"].cpu["sextractor_s"],
            "ours_same_ccds_cpu_sextractor_s": now["manifest"].cpu["sextractor_s"],
            "speedup_vs_previous": round(ratio, 3), "previous_core_minutes": _scaled(prev, n_cam / n)[0],
            "ours_same_ccds_core_minutes": _scaled(now, n_cam / n)[0],
            "previous_config": PREVIOUS_CONFIG}


def _io(raw: Path, night: Path, base: Path, jobs: int, ram: Path, sizes: list[int], n_cam: int) -> dict[str, Any]:
    """Bytes on the output file system (everything under ``base`` and the night) of our job and of the naive
    job, traced, on the first ``sizes`` CCDs; extrapolated to the exposure along the line through the sizes."""
    from cosmodm_ops.single_epoch.iotrace import count_strace

    runs: dict[str, list[tuple[int, int, int]]] = {"ours": [], "naive": []}
    out: dict[str, Any] = {"io_ccds": sizes,
                           "io_method": "strace -f -y: bytes of read/write/mmap/sendfile calls on files under the "
                                        "run folder and the night"}
    for n in sizes:
        only = _first_ccds(raw, n) if n < n_cam else None
        for name, work, over in (("ours", ram, None), ("naive", base / "naive_work", NAIVE_CONFIG)):
            log = base / f"strace_{name}.log"
            _job(raw, night, base / f"se_io_{name}", jobs, work, _with(over, only, ram), trace=log)
            c = count_strace(log, (base, night))  # the night may be a link to a shared folder
            log.unlink()
            runs[name].append((n, c.read, c.written))
            out[f"io_{name}_{n}ccd"] = {"read": c.read, "written": c.written, "by_kind": c.by_kind}
    out.update(io_line(n_cam, runs["ours"], runs["naive"]))
    return out


def io_line(n_cam: int, ours: list[tuple[int, int, int]], naive: list[tuple[int, int, int]]) -> dict[str, Any]:
    """Bytes read and written per exposure of our job and the naive one, from runs on part of the exposure
    (``(ccds, read, written)``): a straight line (a per-exposure part -- the inputs read, the raw file
    decompressed -- and a per-CCD part) through the smallest and largest run, at ``n_cam`` CCDs; one run
    (or the whole exposure) stands as it is. The ratios naive / ours of bytes read + written and written."""
    def at(runs: list[tuple[int, int, int]]) -> tuple[float, float, dict[str, float]]:
        (na, ra, wa), (nb, rb, wb) = min(runs), max(runs)
        if nb == na:
            return float(ra), float(wa), {}
        per_r, per_w = (rb - ra) / (nb - na), (wb - wa) / (nb - na)
        fixed_r, fixed_w = ra - na * per_r, wa - na * per_w
        line = {"read_per_exposure": fixed_r, "read_per_ccd": per_r, "written_per_exposure": fixed_w,
                "written_per_ccd": per_w}
        return fixed_r + n_cam * per_r, fixed_w + n_cam * per_w, {k: round(v) for k, v in line.items()}

    o_r, o_w, o_line = at(ours)
    n_r, n_w, n_line = at(naive)
    return {"io_ours_read": round(o_r), "io_ours_written": round(o_w), "io_naive_read": round(n_r),
            "io_naive_written": round(n_w), "io_ours_line": o_line, "io_naive_line": n_line, "io_n_ccds": n_cam,
            "io_ratio_read_write": round((n_r + n_w) / (o_r + o_w), 2) if o_r + o_w > 0 else None,
            "io_ratio_written": round(n_w / o_w, 2) if o_w > 0 else None}


def _simulated_raw(night: Path, camera: str, seed: int, density: str = "real") -> Path:
    """The raw exposure of ``camera`` in ``night`` (simulated with ``cosmodm sim night`` unless already there)."""
    from cosmodm_ops.cli import EXIT_OK, main

    raws = sorted((night / "raw").glob(f"{camera}_*.fits.fz")) if night.exists() else []
    if not raws:
        argv = ["sim", "night", "--camera", camera, "--night", NIGHT, "--exposures", "1", "--bands", "r",
                "--seed", str(seed), "--density", density, "--no-progress", "--out", str(night)]
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
        "own_share": f"target <= {OWN_SHARE_TARGET_18:.0%}",
        "bytes_ratio": f"naive / ours, target >= {BYTES_RATIO_TARGET:.0f}x",
        "core_min_wall": "wall x jobs (shared machine: inflated)",
        "core_minutes": f"per exposure (scaled when --ccds), target <= {CORE_MIN_TARGET:.0f}",
        "previous_core_minutes": "previous configuration, same CCDs and run, scaled",
        "density_ratio_to_real": "simulated / real DES-wide objects to S/N 5",
        "io_ratio_read_write": f"naive / ours, bytes read + written (strace), target >= {BYTES_RATIO_TARGET:.0f}x",
        "io_ratio_written": "naive / ours, bytes written (strace)",
        "core_minutes_warm": "calibration cache warm (a node's steady state)",
        "core_minutes_cold": "first exposure of a node-night (the whole calibration staging on it)",
        "io_ratio_read_write_warm": "cache warm, no staging",
        "io_ratio_read_write_cold": "first exposure of a node-night (cache cold)",
        "tools_core_minutes": f"SExtractor + PSFEx + SCAMP alone, scaled (the floor under the {CORE_MIN_TARGET:.0f} target)",
        "format_floor_s_per_ccd": "fpack of one CCD's products + funpack of a raw CCD (the prescribed formats)",
        "own_share_floor": f"the format floor / CPU per CCD (the floor under the {OWN_SHARE_TARGET_18:.0%} target)",
    }
    if results.get("amortization"):  # the assumption beside the amortized figures
        for key in ("core_minutes", "own_share", "io_ratio_read_write", "previous_core_minutes"):
            anchors[key] = f"{anchors.get(key, '')} [amortized: {results['amortization']}]".strip()
    if "density_ratio_to_real" in results:  # beside every timing
        for key in ("core_min", "core_minutes", "previous_core_minutes", "wall_s", "cpu_total_s"):
            anchors[key] = f"{anchors.get(key, '')} [density x{results['density_ratio_to_real']} real]".strip()
    flat = {k: (json.dumps(v) if isinstance(v, dict) else v) for k, v in results.items()}
    return table(flat, anchors)
