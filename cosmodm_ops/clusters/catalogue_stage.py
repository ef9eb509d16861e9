"""The catalogue stage of the image chain: the coadd code's detection image, PSFEx and dual-image SExtractor.

:func:`band_catalogues` takes the band coadds of a target tile (plain FITS image + weight on the
common zeropoint ``coadd.magzero``) and runs, unchanged, what ``coadd calibrate`` runs
(:mod:`cosmodm_ops.coadd.detection`, :mod:`cosmodm_ops.coadd.catalogs`): the mean-S/N detection
image of the detection bands present, SExtractor + PSFEx per band, SExtractor in dual-image mode per
band (MAG_AUTO, MAG_DETMODEL; SPREAD_MODEL and MAG_PSF in i, :data:`LIGHT_PARAMS`), and the calibrated catalog products
(``catalog_<band>.fits``; dzp 0: the warps' zeropoints are already absolute). With ``qa_plots`` it
also runs the stellar-locus fit (as a check, not applied) and draws the coadd code's locus and
SPREAD_MODEL plots.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["LIGHT_PARAMS", "band_catalogues", "chain_settings"]

#: Parameters of the bands other than the reference band (i): coadd_dual.param without MAG_PSF and
#: SPREAD_MODEL (the finder takes SPREAD_MODEL from i; each model fit left out saves about a third of
#: a band's SExtractor time). With ``qa_plots`` every band gets the full list (the locus needs MAG_PSF).
LIGHT_PARAMS = "cluster_dual.param"


def chain_settings(detect_thresh: float):
    """The pipeline Config the coadd functions take: survey ps1, local site, the chain's DETECT_THRESH."""
    from cosmodm_ops.config import load_config

    return load_config(survey="ps1", site="local", overrides={"single_epoch": {"detect_thresh": detect_thresh}})


def band_catalogues(coadds: Mapping[str, tuple[Path, Path]], bands: Sequence[str], cfg: Any, tile: Any,
                    work: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """Dual-image catalogues of every band; returns ({"tables", "paths"}, QA plot products)."""
    from cosmodm_ops.coadd import catalogs, detection
    from cosmodm_ops.coadd.inputs import BandCoadd

    settings = chain_settings(cfg.detect_thresh)
    se = settings.single_epoch
    ims = {b: catalogs.prepare_band(BandCoadd(b, work, coadds[b][0], coadds[b][1], [], {}), tile, work)
           for b in bands}
    det_bands = [b for b in cfg.detection_bands if b in ims] or list(bands)
    det, det_w = detection.run([ims[b].image for b in det_bands], [ims[b].weight for b in det_bands],
                               settings.coadd.detection_image)
    det_paths = detection.write(work, det, det_w, ims[bands[0]].header)
    psfs = {b: catalogs.coadd_psf(b, ims[b], tile, settings, work, psf_size=cfg.psf_size) for b in bands}
    ref = "i" if "i" in bands else bands[0]
    light = settings.model_copy(update={"coadd": settings.coadd.model_copy(update={"catalog_params": LIGHT_PARAMS})})
    # the coadds are not PSF-homogenized: the model is fitted on the detection image with the first
    # detection band's PSF (r: the mean-S/N image of r and i has a PSF between theirs), then convolved
    # with each band's own PSF for its amplitude there
    det_psf = psfs[det_bands[0]]
    dual = {b: catalogs.dual_image_catalog(b, ims[b], psfs[b], det_paths, tile,
                                           settings if (b == ref or cfg.qa_plots) else light, work, det_psf=det_psf)
            for b in bands}
    tables = {b: c for b, (c, _) in dual.items()}
    catalogs.check_same_length(tile.name, tables)
    paths = {}
    for b, (_, src) in dual.items():
        apcorr = catalogs.total_correction(tables[b], se.spread_model_star_max, ims[b].beta, ims[b].fwhm_px) \
            if "MAG_PSF" in (tables[b].dtype.names or ()) else 0.0
        paths[b] = catalogs.write_catalog(src, work / f"catalog_{b}.fits", 0.0, apcorr, settings.coadd.magzero)
    qa: dict[str, str] = {}
    if cfg.qa_plots:
        qa = _qa_plots(tables, det_bands, ims, settings, tile, work)
    for b in bands:  # the plain copies and intermediate catalogues are not products
        for p in (*ims[b].plain.values(), work / f"{b}.pass1.ldac", work / f"{b}.dual.ldac"):
            Path(p).unlink(missing_ok=True)
    for p in det_paths:
        Path(p).unlink(missing_ok=True)
    return {"tables": tables, "paths": paths}, qa


def _qa_plots(tables: Mapping[str, np.ndarray], det_bands: Sequence[str], ims: Mapping[str, Any], settings: Any,
              tile: Any, work: Path) -> dict[str, str]:
    """The coadd code's stellar-locus (fit as a check) and SPREAD_MODEL plots; their paths."""
    from cosmodm_ops.coadd import abscal, catalogs
    from cosmodm_ops.coadd.locus import plot_locus
    from cosmodm_ops.coadd.plots import plot_spread_model

    se, co = settings.single_epoch, settings.coadd
    apcorr = {b: catalogs.total_correction(tables[b], se.spread_model_star_max, ims[b].beta, ims[b].fwhm_px)
              for b in tables}
    out: dict[str, str] = {}
    cal = abscal.calibrate(tables, det_bands, apcorr, None, spread_model_max=se.spread_model_star_max,
                           snr_min=co.star_snr_min, match_radius_arcsec=co.match_radius_arcsec,
                           label=f"chain {tile.name}")
    if cal.result is not None:
        out["qa_locus"] = str(plot_locus(cal.result, work / "qa_locus.png", title=f"{tile.name}: stellar locus "
                                         f"(dzp {', '.join(f'{b} {v:+.3f}' for b, v in cal.dzp.items())}, not applied)"))
    ref = "i" if "i" in tables else next(iter(tables))
    out["qa_spread_model"] = str(plot_spread_model(tables[ref], 0.0, se.spread_model_star_max,
                                                   work / "qa_spread_model.png", f"{tile.name} {ref}"))
    return out
