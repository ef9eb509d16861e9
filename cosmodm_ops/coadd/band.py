"""``run_band``: the coadd of one tile and band, as the list of its stages.

``run_band`` takes the tile's accepted single-epoch CCD images of one band (found in the
archive by :mod:`cosmodm_ops.coadd.cli`; nothing here imports SQL) and, stage by stage,
logging each stage's time:

1. **stars** (:mod:`~cosmodm_ops.coadd.stars`): calibration stars of every input catalog;
2. **photcal** (:mod:`~cosmodm_ops.coadd.zeropoints`): relative zeropoints, the worst images
   removed while the bright-star repeatability exceeds ``qa.repeatability_mmag``;
3. **psf** (:mod:`~cosmodm_ops.coadd.psf`): each used image's PSFEx model, its FWHM (arcsec) at
   the image centre, the band's Moffat target (``coadd.psf_target_scale`` x the median FWHM,
   beta ``coadd.moffat_beta``);
4. **homogenize** (:mod:`~cosmodm_ops.coadd.homogenize`): per image, sky subtracted, convolved to
   the target, written uncompressed into the work folder; the PSF FWHM before and after on a
   3 x 3 grid. An image broader than the target stays in the plain coadd only;
5. **swarp** and 6. **swarp_homog** (:mod:`~cosmodm_ops.coadd.stack`): the plain coadd from the
   archived images, the homogenized coadd from the convolved ones;
7. **qa** (:mod:`~cosmodm_ops.coadd.qa`, :mod:`~cosmodm_ops.coadd.plots`,
   :mod:`~cosmodm_ops.coadd.report`): checks, ``qa.json``, the repeatability plot, the PSF-FWHM
   map, an HTML report;
8. **manifest** (:mod:`~cosmodm_ops.coadd.manifests`): ``manifest.json`` with every input product
   (path, sha256, size, tags) so the archive links coadd <- images.

Coadd pixel values are on the zeropoint ``coadd.magzero`` (30): ``m = -2.5 log10(flux) + 30``,
relative to the mean of the tile's images until the multi-band calibration
(:mod:`cosmodm_ops.coadd.tile`) fixes it.

Output folder (``--out``)::

    <tile>_<band>_coadd.fits.fz, <tile>_<band>_coadd_weight.fits.fz
    <tile>_<band>_coadd_homog.fits.fz, <tile>_<band>_coadd_homog_weight.fits.fz
    <tile>_<band>_report.html (+ the PNG plots beside it), qa.json, manifest.json
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cosmodm_ops.coadd import psf, stack, stars, zeropoints
from cosmodm_ops.coadd import qa as coadd_qa
from cosmodm_ops.coadd.homogenize import HomogenizedInputs, homogenize_inputs
from cosmodm_ops.coadd.inputs import CoaddInput, NoInputsError
from cosmodm_ops.coadd.manifests import band_inputs, product, write_job_manifest
from cosmodm_ops.coadd.stages import StageTimer
from cosmodm_ops.coadd.tiling import Tile
from cosmodm_ops.common import scratch_root, utc_now, write_json
from cosmodm_ops.common import workdir as scratch_dir
from cosmodm_ops.config import Config
from cosmodm_ops.model import ProductKind, Stage, Tags
from cosmodm_ops.qa.thumbnail_products import coadd_thumbnail

__all__ = ["run_band"]

log = logging.getLogger(__name__)


def run_band(tile: Tile, band: str, inputs: Sequence[CoaddInput], cfg: Config, out: str | os.PathLike[str], *,
             workdir: str | os.PathLike[str] | None = None, skipped: Sequence[Mapping[str, Any]] = (),
             nthreads: int | None = None) -> int:
    """Coadd one band of one tile: relative calibration, two SWarp coadds, QA, manifest.

    Parameters
    ----------
    tile : Tile
        The tile (its WCS is the coadd's).
    band : str
    inputs : sequence of CoaddInput
        The tile's accepted CCD images of the band (not quarantined; overlapping the tile).
    cfg : Config
        ``coadd``, ``qa`` and ``single_epoch`` settings; ``pipeline_version``, survey and camera for tags.
    out : path
        Output folder.
    workdir : path, optional
        Parent of the scratch folder (default ``cfg.site.ramdisk.path``); removed on every way out.
    skipped : sequence of dict
        Candidate images that were left out before the run (quarantined, incomplete), for the QA record.

    Returns 0 (done; a QA failure is recorded in qa.json, the gate acts on it). Raises
    NoInputsError or CoaddBadInput: nothing to coadd, or inputs that cannot be calibrated (exit 65).
    """
    if not inputs:
        msg = (f"tile {tile.name} band {band}: no accepted inputs (no single-epoch image of the band that "
               f"overlaps the tile and is not quarantined)")
        raise NoInputsError(msg)
    start_iso, t_start, out = utc_now(), time.perf_counter(), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    label, co = f"coadd {tile.name} {band}", cfg.coadd
    stage = StageTimer(label)
    log.info("%s: %d input image(s)", label, len(inputs))
    with stage("stars"):
        tables = stars.read(inputs, stars.StarCuts.from_config(cfg))
    with stage("photcal"):
        zps = zeropoints.run(tables, [i.name for i in inputs], [i.expnum for i in inputs],
                             zeropoints.settings_from_config(cfg), tile=tile.name, band=band)
    with stage("psf"):
        psfs = psf.read(inputs, zps, tile=tile.name, band=band)
        fscale = zps.flux_scales(co.magzero)
        target_arcsec = psf.target_fwhm(list(psfs.values()), co.psf_target_scale)
        _log_target(label, psfs, target_arcsec, co.moffat_beta)
    # scratch: homogenized copies and SWarp's resampled images, about 4 x 8 bytes per input pixel
    need = sum(32 * p.shape[0] * p.shape[1] for p in psfs.values()) + 16 * tile.npix**2
    root = scratch_root(workdir or cfg.site.ramdisk.path, need, cfg.site.ramdisk.max_fraction, out)
    with scratch_dir(root, f"coadd-{tile.name}-{band}") as work:
        with stage("homogenize"):
            homog = homogenize_inputs(inputs, psfs, fscale, target_arcsec, co.moffat_beta, work, tile=tile.name,
                                      band=band)
        coadds = stack.run(tile, band, inputs, zps.used, fscale, homog.sky, homog.swarp_inputs,
                           target_arcsec=target_arcsec, beta=co.moffat_beta, magzero=co.magzero, out=out,
                           work=work, stage=stage, nthreads=nthreads)
        with stage("qa_coverage"):
            import fitsio

            coverage = stack.coverage_fraction(fitsio.read(str(coadds.plain_weight)))
    with stage("qa"):
        summary, qa_path, report = _band_qa(out, tile, band, cfg, inputs, [len(t) for t in tables], zps, fscale,
                                            psfs, homog, target_arcsec, coverage, skipped)
    with stage("manifest"):
        tags = Tags(survey=cfg.survey.name, camera=cfg.camera.name, stage=Stage.COADD, version=cfg.pipeline_version,
                    kind=ProductKind.COADD, tile=tile.name, band=band)
        stage.timings["total"] = round(time.perf_counter() - t_start, 4)
        write_job_manifest(out / "manifest.json", cfg, name=f"coadd-{tile.name}-{band}", start=start_iso,
                           tags={"survey": cfg.survey.name, "camera": cfg.camera.name, "stage": "coadd",
                                 "version": cfg.pipeline_version, "tile": tile.name, "band": band},
                           products=_band_products(coadds.paths, qa_path, report, out, tags),
                           inputs=band_inputs(inputs, zps.used), timings=stage.timings)
    log.info("%s: done in %.1f s: %d of %d images, repeatability %s mmag, QA %s", label,
             time.perf_counter() - t_start, len(zps.used), len(inputs), _mmag(summary["repeatability_mmag"]),
             summary["verdict"])
    return 0


def _log_target(label: str, psfs: Mapping[int, psf.ImagePSF], target_arcsec: float, beta: float) -> None:
    fwhm_in = np.array([p.fwhm for p in psfs.values()])
    log.info("%s: input PSF FWHM %.3f-%.3f arcsec (median %.3f); target Moffat FWHM %.3f arcsec, beta %g",
             label, fwhm_in.min(), fwhm_in.max(), np.median(fwhm_in), target_arcsec, beta)


def _mmag(value: float | None) -> str:
    return f"{value:.1f}" if value is not None else "n/a"


def _band_qa(out: Path, tile: Tile, band: str, cfg: Config, inputs: Sequence[CoaddInput], n_stars: list[int],
             zps: zeropoints.RelativeZeropoints, fscale: np.ndarray, psfs: Mapping[int, psf.ImagePSF],
             homog: HomogenizedInputs, target_arcsec: float, coverage: float,
             skipped: Sequence[Mapping[str, Any]]) -> tuple[dict[str, Any], Path, Path]:
    """Checks, summary, ``qa.json``, the repeatability plot, the PSF-FWHM map and the HTML report of a band."""
    from cosmodm_ops.coadd.photcal import plot_repeatability
    from cosmodm_ops.coadd.plots import plot_fwhm_map
    from cosmodm_ops.coadd.report import band_tables, write_band_report

    checks = coadd_qa.band_checks(zps, homog, target_arcsec=target_arcsec, coverage=coverage, qa=cfg.qa)
    summary = coadd_qa.band_summary(tile.name, band, n_inputs=len(inputs), n_skipped=len(skipped), zps=zps,
                                    psfs=psfs, homog=homog, target_arcsec=target_arcsec, coverage=coverage,
                                    co=cfg.coadd, checks=checks)
    images = coadd_qa.band_images(inputs, n_stars, zps, fscale, psfs, homog)
    plots: list[tuple[str, Path]] = []
    if zps.repeatability is not None:
        p = plot_repeatability(zps.repeatability, out / f"{tile.name}_{band}_repeatability.png",
                               cfg.qa.repeatability_mmag, title=f"{tile.name} {band}: repeatability")
        plots.append(("Repeatability of calibrated star magnitudes", p))
    if homog.samples:
        p = plot_fwhm_map(homog.samples, tile, out / f"{tile.name}_{band}_psf_fwhm.png", target_arcsec)
        plots.append(("PSF FWHM over the tile, before and after homogenization", p))
    qa_doc = {"tile": tile.name, "band": band, "summary": summary, "checks": checks, "images": images,
              "removed": zps.removed, "skipped": list(skipped), "not_homogenized": homog.not_homogenized,
              "psf_samples": homog.samples}
    qa_path = write_json(out / "qa.json", qa_doc)
    report = write_band_report(out / f"{tile.name}_{band}_report.html", tile.name, band, summary, checks, plots,
                               band_tables(images, skipped, homog.not_homogenized))
    return summary, qa_path, report


def _band_products(paths: Mapping[str, Path], qa_path: Path, report: Path, out: Path, tags: Tags) -> list[Any]:
    """The band job's products: the two coadds and their weights (with the input roles they derive from), QA."""
    plain, homog = ["image", "weight", "catalog"], ["image", "weight", "psf", "catalog"]
    thumb = coadd_thumbnail(paths["coadd"], out, tags.to_dict())  # the survey pages' preview
    return [
        product(paths["coadd"], out, ProductKind.COADD, tags, plain),
        product(paths["coadd_weight"], out, ProductKind.COADD_WEIGHT, tags, plain),
        product(paths["coadd_homog"], out, ProductKind.COADD_HOMOG, tags, homog),
        product(paths["coadd_homog_weight"], out, ProductKind.COADD_HOMOG_WEIGHT, tags, homog),
        product(qa_path, out, ProductKind.QA, tags),
        product(report, out, ProductKind.REPORT, tags),
        *([thumb] if thumb else []),
    ]
