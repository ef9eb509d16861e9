"""``calibrate_tile``: detection image, dual-image catalogs and the stellar-locus calibration of one tile.

Stages (each logged with its time):

1. **read** (:mod:`~cosmodm_ops.coadd.inputs`): every band's PSF-homogenized coadd and weight from
   the band jobs' folders (``coadds``: band folders, or their parent with ``<band>/``), checked
   against their manifests;
2. **decompress** (:mod:`~cosmodm_ops.coadd.catalogs`): plain copies for SExtractor;
3. **detection** (:mod:`~cosmodm_ops.coadd.detection`): the mean S/N image (or CHI-MEAN,
   ``coadd.detection_image``) of ``coadd.detection_bands`` (those present; all bands when none is);
4. **psf** (:mod:`~cosmodm_ops.coadd.catalogs`): SExtractor + PSFEx on each band's homogenized
   coadd (the model for MAG_PSF and SPREAD_MODEL);
5. **catalogs**: SExtractor in dual-image mode (detection image, band image) per band, with
   MAG_DETMODEL (the model fitted on the detection image, scaled in each band: colours);
6. **locus** (:mod:`~cosmodm_ops.coadd.abscal`): stars, MAG_PSF with each band's aperture
   correction, J from ``refcat`` (``mag_J``) when given, the locus fit; per band
   ``ZP = coadd.magzero + dzp``;
7. **completeness** (:mod:`~cosmodm_ops.coadd.truth`; with ``truth``, simulations only): each
   band's catalog scored against the truth catalogue;
8. **products**: calibrated catalogs (every MAG_* + dzp), the detection image, the locus,
   SPREAD_MODEL, completeness and pseudo-colour plots (:mod:`~cosmodm_ops.coadd.plots`);
9. **qa** (:mod:`~cosmodm_ops.coadd.qa`, :mod:`~cosmodm_ops.coadd.report`): ``qa.json`` and the
   HTML report; then ``manifest.json`` (:mod:`~cosmodm_ops.coadd.manifests`).

Without g, r, i and z (or with too few stars) there is no locus fit: the catalogs keep
the relative zeropoint ``coadd.magzero`` and the QA says why.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cosmodm_ops.coadd import abscal, catalogs, detection
from cosmodm_ops.coadd import qa as coadd_qa
from cosmodm_ops.coadd.catalogs import BandImage
from cosmodm_ops.coadd.inputs import read_band_coadds
from cosmodm_ops.coadd.manifests import extra_input, product, write_job_manifest
from cosmodm_ops.coadd.stages import StageTimer
from cosmodm_ops.coadd.tiling import Tile
from cosmodm_ops.common import scratch_root, utc_now, write_json
from cosmodm_ops.common import workdir as scratch_dir
from cosmodm_ops.config import Config
from cosmodm_ops.manifest import ManifestProduct
from cosmodm_ops.model import ProductKind, Stage, Tags

__all__ = ["calibrate_tile"]

log = logging.getLogger(__name__)


def calibrate_tile(tile: Tile, bands: Sequence[str], coadds: Sequence[str | os.PathLike[str]], cfg: Config,
                   out: str | os.PathLike[str], *, refcat: str | os.PathLike[str] | None = None,
                   workdir: str | os.PathLike[str] | None = None, truth: str | os.PathLike[str] | None = None) -> int:
    """Detection image, dual-image catalogs and the stellar-locus calibration of one tile (see the module).

    Returns
    -------
    int
        0 (QA verdicts are in qa.json).

    Raises
    ------
    CoaddBadInput
        A band's coadd is missing or differs from its manifest, the bands are not on one grid,
        PSFEx found no model, or the reference or truth catalogue cannot be read (exit 65).
    """
    label, bands = f"calibrate {tile.name}", list(dict.fromkeys(bands))
    start_iso, t_start, out = utc_now(), time.perf_counter(), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stage, co, se = StageTimer(label), cfg.coadd, cfg.single_epoch
    with stage("read"):
        found = read_band_coadds([Path(c) for c in coadds], bands, tile.name)
    det_bands = [b for b in co.detection_bands if b in found] or list(bands)
    log.info("%s: bands %s, detection from %s", label, ",".join(bands), "+".join(det_bands))
    # scratch: per band image, weight and flag plain (12 bytes a pixel), the detection image and its weight
    root = scratch_root(workdir or cfg.site.ramdisk.path, (12 * len(bands) + 8) * tile.npix**2,
                        cfg.site.ramdisk.max_fraction, out)
    with scratch_dir(root, f"calibrate-{tile.name}") as work:
        with stage("decompress"):
            ims = _prepare_bands(found, bands, tile, work)
        with stage("detection"):
            det, det_w = detection.run([ims[b].image for b in det_bands], [ims[b].weight for b in det_bands],
                                       co.detection_image)
            det_paths = detection.write(work, det, det_w, ims[bands[0]].header)
        with stage("psf"):
            psfs = {b: catalogs.coadd_psf(b, ims[b], tile, cfg, work) for b in bands}
        with stage("catalogs"):
            dual = {b: catalogs.dual_image_catalog(b, ims[b], psfs[b], det_paths, tile, cfg, work) for b in bands}
            cats = {b: c for b, (c, _) in dual.items()}
            sizes = catalogs.check_same_length(tile.name, cats)
        apcorr = {b: catalogs.total_correction(cats[b], se.spread_model_star_max, ims[b].beta, ims[b].fwhm_px)
                  for b in bands}
        with stage("locus"):
            cal = abscal.calibrate(cats, det_bands, apcorr, refcat, spread_model_max=se.spread_model_star_max,
                                   snr_min=co.star_snr_min, match_radius_arcsec=co.match_radius_arcsec, label=label)
        zps = {b: co.magzero + cal.dzp[b] for b in bands}
        comp: dict[str, Any] = {}
        comp_notes: dict[str, str] = {}
        if truth is not None:
            with stage("completeness"):
                from cosmodm_ops.coadd.truth import score_against_truth

                comp, comp_notes = score_against_truth(
                    truth, tile, [ims[b].weight for b in det_bands], cats, cal.dzp, absolute=cal.absolute,
                    radius_arcsec=co.match_radius_arcsec, bin_mag=cfg.qa.completeness_bin_mag,
                    star_max=se.spread_model_star_max)
        with stage("products"):
            tags = Tags(survey=cfg.survey.name, camera=cfg.camera.name, stage=Stage.COADD,
                        version=cfg.pipeline_version, kind=ProductKind.COADD_CATALOG, tile=tile.name, band=bands[0])
            products = _catalog_products({b: p for b, (_, p) in dual.items()}, cal.dzp, apcorr, det, ims[bands[0]],
                                         det_bands, tile, co.magzero, out, tags)
            plots = _tile_plots(cal, cats, ims, bands, det_bands, comp, tile, se.spread_model_star_max, out)
            products += _pseudocolour(found, ims, bands, zps, tile, out, tags)
    with stage("qa"):
        summary = _write_tile_qa(out, tile, bands, det_bands, cfg, cal, cats, zps, apcorr, sizes, comp, comp_notes, plots,
                                 products, truth)
    minputs = [i for b in bands for i in found[b].inputs]
    minputs += [extra_input(role, p) for role, p in (("refcat", refcat), ("truth", truth)) if p is not None]
    stage.timings["total"] = round(time.perf_counter() - t_start, 4)
    write_job_manifest(out / "manifest.json", cfg, name=f"calibrate-{tile.name}", start=start_iso,
                       tags={"survey": cfg.survey.name, "camera": cfg.camera.name, "stage": "coadd",
                             "version": cfg.pipeline_version, "tile": tile.name, "band": None},  # QA: the tile
                       products=products, inputs=minputs, timings=stage.timings)
    log.info("%s: done in %.1f s: zeropoints %s; QA %s", label, time.perf_counter() - t_start,
             ", ".join(f"{b} {zps[b]:.3f}" for b in bands), summary["verdict"])
    return 0


def _prepare_bands(found: Mapping[str, Any], bands: Sequence[str], tile: Tile, work: Path) -> dict[str, BandImage]:
    """Each band's coadd in memory and as plain files, all on the grid of the first band."""
    ims: dict[str, BandImage] = {}
    for b in bands:
        ims[b] = catalogs.prepare_band(found[b], tile, work)
        catalogs.check_same_grid(tile.name, ims)
    return ims


def _catalog_products(raw: Mapping[str, Path], dzp: Mapping[str, float], apcorr: Mapping[str, float],
                      det: np.ndarray, first: BandImage, det_bands: Sequence[str], tile: Tile, magzero: float,
                      out: Path, tags: Tags) -> list[ManifestProduct]:
    """The calibrated catalog of each band and the detection image, written into ``out``."""
    from cosmodm_ops.coadd.imageio import plain_header
    from cosmodm_ops.fits import write_image

    products: list[ManifestProduct] = []
    for b, src in raw.items():
        dst = catalogs.write_catalog(src, out / f"{tile.name}_{b}_cat.fits", dzp[b], apcorr[b], magzero)
        products.append(product(dst, out, ProductKind.COADD_CATALOG, tags.with_(band=b)))
    det_hdr = plain_header(first.header)
    det_hdr["DETBANDS"] = ("+".join(det_bands), "bands of the detection image")
    det_out = write_image(out / f"{tile.name}_det_coadd.fits.fz", det, det_hdr, compress=True)
    products.append(product(det_out, out, ProductKind.COADD, tags.with_(band="det")))
    return products


def _pseudocolour(found: Mapping[str, Any], ims: Mapping[str, BandImage], bands: Sequence[str],
                  zps: Mapping[str, float], tile: Tile, out: Path, tags: Tags) -> list[ManifestProduct]:
    """The tile's ``pseudocolour`` product: from the non-homogenized coadds when all three bands have one."""
    from cosmodm_ops.coadd.imageio import read_image
    from cosmodm_ops.qa.pseudocolour import pick_bands, write_pseudocolour

    rgb = pick_bands(bands)
    if rgb is None:
        return []
    if all(found[b].plain is not None for b in rgb):
        images = {b: read_image(found[b].plain)[0] for b in rgb}
    else:
        log.info("calibrate %s: pseudo-colour image from the homogenized coadds (no plain coadd of %s)", tile.name,
                 ",".join(b for b in rgb if found[b].plain is None))
        images = {b: np.where(ims[b].weight > 0, ims[b].image, np.nan) for b in rgb}
    return [write_pseudocolour(images, rgb, zps, out / f"{tile.name}_pseudocolour.png", out, tags.to_dict())]


def _tile_plots(cal: abscal.AbsoluteCalibration, cats: Mapping[str, np.ndarray], ims: Mapping[str, BandImage],
                bands: Sequence[str], det_bands: Sequence[str], comp: Mapping[str, Any], tile: Tile, star_max: float,
                out: Path) -> list[tuple[str, Path]]:
    """The report's figures: stellar locus, SPREAD_MODEL, completeness, pseudo-colour image."""
    from cosmodm_ops.coadd.locus import plot_locus
    from cosmodm_ops.coadd.plots import color_image, plot_spread_model

    plots: list[tuple[str, Path]] = []
    if cal.result is not None:
        plots.append(("Stellar locus after calibration", plot_locus(
            cal.result, out / f"{tile.name}_locus.png", title=f"{tile.name}: stellar locus")))
    ref_band = det_bands[0] if det_bands[0] in cats else bands[0]
    plots.append((f"SPREAD_MODEL against MAG_AUTO ({ref_band})", plot_spread_model(
        cats[ref_band], cal.dzp[ref_band], star_max, out / f"{tile.name}_spread_model.png",
        f"{tile.name} {ref_band}")))
    if comp:
        from cosmodm_ops.qa.completeness import plot_completeness

        plots.append(("Completeness and purity against truth", plot_completeness(
            comp, out / f"{tile.name}_completeness.png",
            f"{tile.name}: completeness (true mag) and purity (measured MAG_AUTO)")))
    rgb, png = color_image({b: im.image for b, im in ims.items()}, bands, cal.dzp, out / f"{tile.name}_color.png")
    plots.append((f"Pseudo-colour image ({', '.join(rgb)} as red, green, blue)", png))
    return plots


def _write_tile_qa(out: Path, tile: Tile, bands: Sequence[str], det_bands: Sequence[str], cfg: Config,
                   cal: abscal.AbsoluteCalibration, cats: Mapping[str, np.ndarray], zps: Mapping[str, float],
                   apcorr: Mapping[str, float],
                   sizes: Mapping[str, int], comp: Mapping[str, Any], comp_notes: Mapping[str, str],
                   plots: Sequence[tuple[str, Path]], products: list[ManifestProduct],
                   truth: str | os.PathLike[str] | None) -> dict[str, Any]:
    """``qa.json`` and the HTML report of the tile (appended to ``products``); returns the summary."""
    from cosmodm_ops.coadd.report import write_tile_report

    checks = coadd_qa.tile_checks(cal, bands, zps, sizes, comp if truth is not None else None, comp_notes,
                                  qa=cfg.qa)
    measured = coadd_qa.measured_fraction(cats, det_bands)
    summary = coadd_qa.tile_summary(tile.name, bands, det_bands, cal, zps=zps, apcorr=apcorr, sizes=sizes,
                                    comp=comp, magzero=cfg.coadd.magzero, checks=checks, measured=measured)
    qa_doc = {"tile": tile.name, "bands": list(bands), "summary": summary, "checks": checks,
              "zeropoints": dict(zps), "dzp": cal.dzp, "apcorr": dict(apcorr), "locus": coadd_qa.locus_record(cal),
              "truth": None if truth is None else str(truth),
              "completeness": {b: res.to_dict() for b, res in comp.items()} if truth is not None else None,
              "completeness_notes": dict(comp_notes), "measured": measured}
    qa_path = write_json(out / "qa.json", qa_doc)
    report = write_tile_report(out / f"{tile.name}_report.html", tile.name, summary, checks, plots,
                               [[b, zps[b], cal.dzp[b], apcorr[b], sizes[b]] for b in bands], comp)
    qa_tags = Tags(survey=cfg.survey.name, camera=cfg.camera.name, stage=Stage.QA, version=cfg.pipeline_version,
                   kind=ProductKind.QA, tile=tile.name)
    products.append(product(qa_path, out, ProductKind.QA, qa_tags))
    products.append(product(report, out, ProductKind.REPORT, qa_tags))
    return summary
