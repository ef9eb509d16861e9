"""The single-epoch exposure runner: one batch job, one exposure.

``run_exposure(...)`` reads as the list of stages, each a function of its own module:
read and check the inputs, find the calibration files in the node's cache (built there by the
node's first job: :mod:`~cosmodm_ops.single_epoch.calibcache`) and stage the other inputs into the RAM disk
(:mod:`~cosmodm_ops.single_epoch.exposure_inputs`), phase A per CCD in ``jobs`` worker
processes (:func:`~cosmodm_ops.single_epoch.ccd.prepare_ccd`), SCAMP once over the
exposure against the reference stars of its footprint
(:mod:`~cosmodm_ops.single_epoch.astrometry`), phase C per CCD
(:func:`~cosmodm_ops.single_epoch.ccd.finish_ccd`), QA
(:mod:`~cosmodm_ops.single_epoch.exposure_qa`), products and the manifest
(:mod:`~cosmodm_ops.single_epoch.outputs`). It writes ``manifest.json`` and ``qa.json``
into the output folder and returns the exit code (0 done, 3 done with failed CCDs). Bad input raises
:class:`~cosmodm_ops.single_epoch.inputs.BadInputError` (exit 65), transient trouble
(RAM disk full, I/O errors) raises ``OSError`` (exit 75). The RAM-disk folder is
removed on every path out (``Staging`` context manager).

Re-runs: a CCD whose products in an existing ``manifest.json`` (same config hash)
still exist with the recorded sha256 is not redone; its products and QA entry are
carried over.

Memory: each worker holds about one CCD (image, weight, mask, float32) plus the
tools' memory, roughly 0.4 GB for a 2k x 4k CCD; the parent holds only small
dicts. Peak memory is about ``jobs x 0.4 GB`` plus the reference catalog.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fitsio

from cosmodm_ops import fits as cfits
from cosmodm_ops.common import utc_now
from cosmodm_ops.common import versions as _versions
from cosmodm_ops.config import Config, config_hash
from cosmodm_ops.manifest import write_manifest
from cosmodm_ops.qa.thumbnail_products import exposure_thumbnail
from cosmodm_ops.single_epoch.accounting import StageClock, cpu_block, merge_records, tree_cpu
from cosmodm_ops.single_epoch.astrometry import MIN_SCAMP_REF_STARS, solve_exposure
from cosmodm_ops.single_epoch.calibcache import CachedCalib, cache_folder, stage_calibrations
from cosmodm_ops.single_epoch.ccd import finish_ccd, prepare_ccd
from cosmodm_ops.single_epoch.exposure_inputs import (
    MIN_PSF_STARS,
    ExposureInputs,
    calib_extnames,
    ccd_specs,
    raw_hdus_needed,
    read_exposure_inputs,
    stage_inputs,
)
from cosmodm_ops.single_epoch.exposure_qa import qa_document, write_qa_json
from cosmodm_ops.single_epoch.outputs import (
    CcdOutcomes,
    build_manifest,
    carry_over,
    collect_ccd_results,
    input_records,
    product,
    product_tags,
    tree_bytes,
)

__all__ = ["MIN_PSF_STARS", "MIN_SCAMP_REF_STARS", "run_exposure"]


@dataclass
class _Accounts:
    """The run's accounting: start (wall, process-tree CPU, UTC), the parent's own stages (the workers bring
    their own records), and the wall timings of the phases."""

    t_start: float = field(default_factory=time.perf_counter)
    cpu_start: float = field(default_factory=tree_cpu)
    clock: StageClock = field(default_factory=StageClock)
    records: list[dict[str, Any]] = field(default_factory=list)
    start_iso: str = field(default_factory=utc_now)
    timings: dict[str, float] = field(default_factory=dict)


class _Workers:
    """The job's worker processes, one pool for phase A and phase C (started on first use, closed on exit).

    Workers are forked where the platform can (Linux): the modules every worker needs are imported, and
    the detrend kernel loaded, once in the parent before the fork (:func:`_warm_up`), instead of in each
    worker of each phase (astropy, scipy, numba: about 4 s of CPU per worker process).
    """

    def __init__(self, jobs: int, kind: str, clock: StageClock) -> None:
        self.jobs, self.kind, self.clock = jobs, kind, clock
        self.pool: cf.ProcessPoolExecutor | None = None

    def map(self, func: Callable[..., dict[str, Any]], items: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
        if self.jobs <= 1 or len(items) <= 1:
            return [func(*it) for it in items]
        if self.pool is None:
            with self.clock.stage("warm_up"):
                _warm_up(self.kind)
            ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
            self.pool = cf.ProcessPoolExecutor(max_workers=self.jobs, mp_context=ctx)
        return list(self.pool.map(func, *zip(*items, strict=True)))

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)
            self.pool = None


def _warm_up(kind: str) -> None:
    """Import what the workers import, in the parent (forked workers inherit it)."""
    import scipy.ndimage  # noqa: F401 - the detrend's bleed trails, SExtractor catalog reading
    from astropy.wcs import WCS  # noqa: F401

    if kind == "raw":
        from cosmodm_ops.single_epoch import raw  # noqa: F401
        from cosmodm_ops.single_epoch.rawccd import warm_up_kernel

        warm_up_kernel()


def _timed_map(timings: dict[str, float], name: str, workers: _Workers, func: Callable[..., dict[str, Any]],
               items: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """``workers.map``, its wall time into ``timings[name]``."""
    t0 = time.perf_counter()
    out = workers.map(func, items)
    timings[name] = time.perf_counter() - t0
    return out


def _phase_a_done(preps: list[dict[str, Any]], records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Take the workers' clock records out of phase A's results, note each image's shape; the CCDs that succeeded."""
    for p in preps:
        records.append(p.pop("clock", {}))
        if "image" in p:
            p["shape"] = fitsio.read_header(p["image"], 0)["NAXIS2"], fitsio.read_header(p["image"], 0)["NAXIS1"]
    return [p for p in preps if "failed" not in p]


def run_exposure(
    *,
    cfg: Config,
    outdir: str | os.PathLike[str],
    refcat: str | os.PathLike[str],
    detrended: tuple[str, str, str] | None = None,
    raw: str | None = None,
    calib: str | None = None,
    workdir: str | None = None,
    jobs: int | None = None,
) -> int:
    """Run the single-epoch pipeline for one exposure; returns the exit code (0 or 3).

    Parameters
    ----------
    cfg : Config
        Merged configuration (survey, camera, site, qa, single_epoch).
    outdir : path
        Output folder (products, manifest.json, qa.json).
    refcat : path
        Reference catalog (FITS table: ra, dec, ra_error, dec_error [mas], phot_g_mean_mag or mag_<band>).
    detrended : (image, weight, mask), optional
        Already-detrended input (DECam CP InstCal style: ADU with GAINA/GAINB, or electrons).
    raw, calib : path, optional
        Raw exposure and calibration folder (raw path).
    workdir : path, optional
        Parent of the RAM-disk folder (default ``site.ramdisk.path``).
    jobs : int, optional
        Worker processes (default: the machine's cores).
    """
    acc = _Accounts()
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    jobs = jobs or os.cpu_count() or 1
    chash = config_hash(cfg)
    clock = acc.clock

    with clock.stage("read_inputs"):  # bad input stops here, before any work
        xin = read_exposure_inputs(cfg, refcat, detrended=detrended, raw=raw, calib=calib)
    info = xin.info
    carried_products, carried_qa = carry_over(outdir, chash)
    out = CcdOutcomes()
    root = workdir or cfg.site.ramdisk.path
    with cfits.Staging(job=f"se{info.expnum}", root=root, max_fraction=cfg.site.ramdisk.max_fraction) as stg:
        work = stg.path
        assert work is not None
        with clock.stage("calib_cache"):  # the node's calibration cache (raw path): checked, built or completed
            cached = _cached_calibrations(cfg, xin)
        with clock.stage("stage"):
            staged = stage_inputs(stg, xin.inputs, keep=raw_hdus_needed(cfg, xin.kind), skip=cached)
        specs, skipped = ccd_specs(cfg, xin, staged.paths, work, outdir, calib, done=carried_products,
                                   cached={role: c.folder for role, c in cached.items()})
        for ccd in skipped:
            out.carried(ccd, carried_products[ccd])

        workers = _Workers(jobs, xin.kind, clock)
        try:
            astrom_reason = _ccd_phases(acc, workers, specs, work, xin, cfg, out, outdir)
        finally:
            workers.close()  # before the manifest's CPU block: the tree's CPU then holds the workers
        # every file of the job's RAM-disk folder, measured before it is removed (nothing there is deleted earlier)
        ramdisk_bytes = tree_bytes(work)

    # QA
    qa_doc = qa_document(sorted(out.units), out.values, carried_qa, out.failed, astrom_reason, info, cfg)
    qa_path = write_qa_json(outdir, qa_doc)
    _add_exposure_products(out, qa_path, outdir, cfg, info)

    # manifest
    _write_manifest(acc, cfg=cfg, xin=xin, out=out, outdir=outdir, chash=chash, ramdisk_bytes=ramdisk_bytes,
                    digests={**staged.sha256, **{role: c.sha256 for role, c in cached.items()}},
                    calib_cache=_cache_record(cfg, xin, cached))
    return 3 if out.n_failed else 0


def _cached_calibrations(cfg: Config, xin: ExposureInputs) -> dict[str, CachedCalib]:
    """The calibration files' entries in the node's cache (empty: detrended input, or the cache is off)."""
    if xin.kind != "raw":
        return {}
    calib_inputs = [(role, path) for role, path in xin.inputs if role not in ("raw", "refcat")]
    return stage_calibrations(cfg, calib_inputs, calib_extnames(cfg, xin))


def _cache_record(cfg: Config, xin: ExposureInputs, cached: dict[str, CachedCalib]) -> dict[str, Any] | None:
    """The manifest's ``calib_cache``: folder and, per calibration role, the entry, what this job did with it
    (hit, built, extended, rebuilt; ``off`` when read without the cache) and the source bytes it read."""
    if xin.kind != "raw":
        return None
    roles = [role for role, _ in xin.inputs if role not in ("raw", "refcat")]
    entries = {role: ({"key": cached[role].key, "status": cached[role].status,
                       "source_bytes_read": cached[role].bytes_read} if role in cached else {"status": "off"})
               for role in roles}
    return {"enabled": cfg.single_epoch.calib_cache, "folder": str(cache_folder(cfg)), "entries": entries}


def _ccd_phases(acc: _Accounts, workers: _Workers, specs: list[dict[str, Any]], work: Path, xin: ExposureInputs,
                cfg: Config, out: CcdOutcomes, outdir: Path) -> str | None:
    """Phase A per CCD, SCAMP, phase C per CCD, results into ``out``; the astrometry's failure reason."""
    clock, timings, info = acc.clock, acc.timings, xin.info
    # phase A per CCD: ingest/detrend, SExtractor pass 1, PSFEx
    preps = _timed_map(timings, "phase_a_wall", workers, prepare_ccd, [(s,) for s in specs])
    prep_ok = _phase_a_done(preps, acc.records)
    # SCAMP once per exposure against the reference stars of its footprint
    t0 = time.perf_counter()
    with clock.stage("astrometry"):
        heads, astrom_reason = solve_exposure(work, prep_ok, xin.ref, info, cfg, clock)
    timings["scamp"] = time.perf_counter() - t0
    # phase C per CCD: SExtractor pass 2, QA values, products
    items = [(dict(next(s for s in specs if s["ccd"] == p["ccd"]), scamp_head=heads.get(p["ccd"])), p)
             for p in prep_ok]
    results = _timed_map(timings, "phase_c_wall", workers, finish_ccd, items)
    collect_ccd_results(out, preps, results, outdir=outdir, cfg=cfg, info=info, clock=clock, records=acc.records)
    return astrom_reason


def _add_exposure_products(out: CcdOutcomes, qa_path: Path, outdir: Path, cfg: Config, info: Any) -> None:
    """The exposure-level products: ``qa.json`` and the survey pages' focal-plane preview (a small PNG)."""
    out.products = [p for p in out.products if p.kind not in ("qa", "thumbnail")]
    out.products.append(product(qa_path, outdir, "qa", product_tags(cfg, info, "qa", None)))
    thumb = exposure_thumbnail(outdir, out.products, cfg.camera, product_tags(cfg, info, "thumbnail", None),
                               binned=out.previews)
    out.products += [thumb] if thumb else []


def _write_manifest(acc: _Accounts, *, cfg: Config, xin: ExposureInputs, out: CcdOutcomes, outdir: Path,
                    chash: str, ramdisk_bytes: int, digests: dict[str, str], calib_cache: dict[str, Any] | None
                    ) -> None:
    """Checksums of the inputs, the timings and CPU block, ``outdir/manifest.json``."""
    with acc.clock.stage("checksums"):
        manifest_inputs = input_records(xin.inputs, digests)
    versions = _versions()
    merged = merge_records([*acc.records, acc.clock.record()])
    timings = acc.timings
    for k, v in merged["timings"].items():
        timings[k] = timings.get(k, 0.0) + v
    timings["total"] = time.perf_counter() - acc.t_start
    # every worker pool is closed (its processes reaped), so the tree's CPU holds them and their tools
    cpu = cpu_block(tree_cpu() - acc.cpu_start, merged)
    manifest = build_manifest(cfg=cfg, info=xin.info, out=out, inputs=manifest_inputs, versions=versions,
                              chash=chash, start_iso=acc.start_iso, timings=timings, ramdisk_bytes=ramdisk_bytes,
                              cpu=cpu)
    if calib_cache is not None:
        manifest.calib_cache = calib_cache  # type: ignore[attr-defined]  # an extra key of the manifest
    write_manifest(manifest, outdir / "manifest.json")
