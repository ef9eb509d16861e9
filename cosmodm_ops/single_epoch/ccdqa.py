"""QA values of one CCD: seeing from the PSF model, aperture correction, astrometric offsets, zeropoint.

:func:`ccd_qa_values` is pure (the pass-2 catalog and the reference catalog as arrays in, a dict of
values out); :func:`cosmodm_ops.single_epoch.ccd.finish_ccd` reads the files and calls it.
:func:`psf_model_moffat` fits a Moffat to a PSFEx model file; :func:`match_sky` is the nearest-neighbour
match of two sky lists.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import fitsio
import numpy as np

from cosmodm_ops.astromatic import sextractor_args
from cosmodm_ops.sky import chord, unit_vectors

__all__ = ["ccd_qa_values", "match_sky", "psf_model_fwhm", "psf_model_moffat"]


def match_sky(ra1: np.ndarray, dec1: np.ndarray, ra2: np.ndarray, dec2: np.ndarray, radius_arcsec: float
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Nearest-neighbour match within ``radius_arcsec``: indices (i1, i2) and offsets dra*cos(dec), ddec (mas)."""
    if len(ra1) == 0 or len(ra2) == 0:
        e = np.zeros(0, int)
        return e, e, np.zeros(0), np.zeros(0)
    from scipy.spatial import cKDTree

    # only the second list's entries in the first one's box (plus the radius) can match: a KD-tree of an
    # exposure's whole reference catalog per CCD cost 0.25 s, most of the CCD's QA time
    near = _in_box(ra2, dec2, ra1, dec1, 2 * radius_arcsec / 3600)
    if len(near) == 0:
        e = np.zeros(0, int)
        return e, e, np.zeros(0), np.zeros(0)
    tree = cKDTree(unit_vectors(ra2[near], dec2[near]))
    dist, idx = tree.query(unit_vectors(ra1, dec1), distance_upper_bound=chord(radius_arcsec))
    ok = np.isfinite(dist)
    i1, i2 = np.nonzero(ok)[0], near[idx[ok]]
    dra = (np.angle(np.exp(1j * np.deg2rad(ra1[i1] - ra2[i2]))) * np.cos(np.deg2rad(dec2[i2]))) * 206264806.2
    ddec = np.deg2rad(dec1[i1] - dec2[i2]) * 206264806.2
    return i1, i2, dra, ddec


def _in_box(ra: np.ndarray, dec: np.ndarray, ra0: np.ndarray, dec0: np.ndarray, margin_deg: float) -> np.ndarray:
    """Indices of (ra, dec) inside the RA/Dec box of (ra0, dec0) grown by ``margin_deg`` (RA wrap-safe)."""
    lo, hi = float(np.min(dec0)) - margin_deg, float(np.max(dec0)) + margin_deg
    keep = (dec >= lo) & (dec <= hi)
    cos_min = math.cos(math.radians(min(90.0, max(abs(lo), abs(hi)))))
    if cos_min > 0.01:  # away from the poles, also cut in RA around the first position
        d0 = (ra0 - ra0[0] + 180.0) % 360.0 - 180.0
        d = (ra - ra0[0] + 180.0) % 360.0 - 180.0
        m = margin_deg / cos_min
        keep &= (d >= float(d0.min()) - m) & (d <= float(d0.max()) + m)
    return np.nonzero(keep)[0]



def psf_model_moffat(psf_path: str | os.PathLike[str]) -> tuple[float, float, float] | None:
    """Moffat fit (free beta) to a PSFEx model at its polynomial origin (the CCD centre).

    The model is the pixel-sampled PSF as stars show it on the image (so the FWHM compares with
    a fit to the stars themselves); ``PSF_SAMP`` converts model steps to image pixels.

    Returns
    -------
    (fwhm, alpha, beta) or None
        FWHM and Moffat alpha in image pixels, and beta; None if the model cannot be read or the fit fails.
    """
    from scipy.optimize import least_squares

    try:
        with fitsio.FITS(str(psf_path)) as f:
            hdr = f[1].read_header()
            cube = np.asarray(f[1].read()["PSF_MASK"][0], float)
    except (OSError, ValueError, KeyError):
        return None
    stamp = cube[0] if cube.ndim == 3 else cube
    samp = float(hdr.get("PSF_SAMP", 1.0))
    ny, nx = stamp.shape
    yy, xx = np.mgrid[:ny, :nx]
    peak = float(stamp.max())
    if not np.isfinite(peak) or peak <= 0:
        return None

    def resid(p: np.ndarray) -> np.ndarray:
        amp, x0, y0, alpha, beta = p
        r2 = ((xx - x0) ** 2 + (yy - y0) ** 2) / alpha**2
        return (amp * (1.0 + r2) ** (-beta) - stamp).ravel()

    cy, cx = np.unravel_index(int(np.argmax(stamp)), stamp.shape)
    try:
        fit = least_squares(resid, [peak, cx, cy, 3.0, 3.0],
                            bounds=([0, 0, 0, 0.3, 1.01], [np.inf, nx, ny, nx, 20.0]))
    except (ValueError, np.linalg.LinAlgError):
        return None
    _, _, _, alpha, beta = fit.x
    fwhm = 2.0 * alpha * math.sqrt(2.0 ** (1.0 / beta) - 1.0) * samp
    if not (fit.success and np.isfinite(fwhm) and fwhm > 0):
        return None
    return float(fwhm), float(alpha * samp), float(beta)


def psf_model_fwhm(psf_path: str | os.PathLike[str]) -> float | None:
    """FWHM (image pixels) of a PSFEx model from :func:`psf_model_moffat`; None where the fit fails."""
    fit = psf_model_moffat(psf_path)
    return fit[0] if fit else None


def _largest_aperture_px() -> float:
    """Diameter (pixels) of the largest SExtractor aperture (the last MAG_APER column)."""
    import inspect

    return float(max(inspect.signature(sextractor_args).parameters["phot_apertures"].default))



def ccd_qa_values(objs: np.ndarray, ref: Mapping[str, np.ndarray], spec: Mapping[str, Any],
                  prep: Mapping[str, Any], moffat: tuple[float, float, float] | None,
                  psf_fwhm_px: float | None = None) -> tuple[dict[str, Any], float | None]:
    """QA values of one CCD from its pass-2 catalog, PSF model fit and the reference catalog (pure).

    Parameters
    ----------
    objs : structured ndarray, shape (n,), n >= 1
        SExtractor pass-2 catalog (SNR_WIN, FLAGS, IMAFLAGS_ISO, SPREAD_MODEL, FWHM_IMAGE, ELLIPTICITY,
        MAG_PSF, MAG_APER (n, n_apertures), ALPHAWIN_J2000, DELTAWIN_J2000).
    ref : mapping
        Reference catalog: ``ra``, ``dec`` (deg), optionally ``mag`` (in ``spec["ref_mag_system"]``).
    spec : mapping
        The CCD's work order: ``star_snr_min``, ``spread_model_star_max``, ``match_radius_arcsec``, ``band``,
        ``ref_mag_system``, ``mag_zeropoint``, ``exptime`` (s).
    prep : mapping
        Phase A's values: ``sky_e``, ``sky_noise_e``, ``masked_fraction``, ``pixel_scale`` (arcsec/pixel).
    moffat : (fwhm, alpha, beta) or None
        :func:`psf_model_moffat` of the CCD's PSF model (pixels).
    psf_fwhm_px : float, optional
        PSFEx's ``PSF_FWHM`` (pixels), used when ``moffat`` is None.

    Returns
    -------
    values : dict
        The QA values (qa.json's ``values`` of the CCD), in qa.json's key order.
    apcorr : float or None
        Aperture correction added to MAG_PSF (mag); None with too few bright point sources.
    """
    values: dict[str, Any] = {"sky_e": prep["sky_e"], "sky_noise_e": prep["sky_noise_e"],
                              "masked_fraction": prep["masked_fraction"], "n_detections": len(objs)}
    snr = objs["SNR_WIN"]
    clean = (objs["FLAGS"] == 0) & (objs["IMAFLAGS_ISO"] == 0)
    pointlike = np.abs(objs["SPREAD_MODEL"]) < spec["spread_model_star_max"]
    stars = clean & pointlike & (snr > spec["star_snr_min"])
    values["n_stars"] = int(stars.sum())
    _seeing(values, objs, stars, moffat, psf_fwhm_px, prep["pixel_scale"])
    apcorr = _aperture_correction(values, objs, clean & pointlike & (snr > 20), moffat)
    sel = clean & (snr > 10)
    i1, i2 = _astrometry(values, objs, sel, pointlike, ref, spec)
    _zeropoint(values, objs, sel, i1, i2, pointlike, apcorr, ref, spec)
    return values, apcorr


def _seeing(values: dict[str, Any], objs: np.ndarray, stars: np.ndarray,
            moffat: tuple[float, float, float] | None, psf_fwhm_px: float | None, scale: float) -> None:
    """``fwhm_method``, ``fwhm_arcsec``, ``ellipticity`` into ``values``.

    Seeing is a Moffat fit to the PSFEx model at the CCD centre (PSFEx's own PSF_FWHM reads 20-25% high for
    Moffat PSFs); else PSF_FWHM; else the stars' median FWHM_IMAGE.
    """
    fwhm_px = moffat[0] if moffat else None
    values["fwhm_method"] = "moffat fit to the PSFEx model"
    if fwhm_px is None:
        fwhm_px = float(psf_fwhm_px if psf_fwhm_px is not None else np.nan)
        values["fwhm_method"] = "PSFEx PSF_FWHM"
    if not np.isfinite(fwhm_px) and stars.any():
        fwhm_px = float(np.median(objs["FWHM_IMAGE"][stars]))
        values["fwhm_method"] = "median FWHM_IMAGE of stars"
    values["fwhm_arcsec"] = fwhm_px * scale if np.isfinite(fwhm_px) else None
    values["ellipticity"] = float(np.median(objs["ELLIPTICITY"][stars])) if stars.any() else None


def _aperture_correction(values: dict[str, Any], objs: np.ndarray, bright_pointlike: np.ndarray,
                         moffat: tuple[float, float, float] | None) -> float | None:
    """The largest aperture minus the PSF magnitude of bright clean point sources, extended to total flux
    with the Moffat of the PSF model (mag); its parts into ``values``."""
    bright = bright_pointlike & (objs["MAG_PSF"] < 90) & (objs["MAG_APER"][:, -1] < 90)
    apcorr = float(np.median(objs["MAG_APER"][:, -1][bright] - objs["MAG_PSF"][bright])) if bright.sum() >= 3 \
        else None
    if apcorr is not None and moffat is not None:
        # the largest aperture misses the PSF's wings (1.4% for a Moffat beta 3 of FWHM 1" in a 5.3" aperture):
        # extend to total flux with the Moffat fitted to the PSF model, EE(r) = 1 - (1 + r^2/alpha^2)^(1-beta)
        _, alpha_px, beta = moffat
        r_ap = 0.5 * _largest_aperture_px()
        ee = 1.0 - (1.0 + (r_ap / alpha_px) ** 2) ** (1.0 - beta)
        if 0.5 < ee <= 1.0:
            values["apcorr_aperture_mag"] = apcorr
            values["apcorr_to_total_mag"] = 2.5 * math.log10(ee)
            apcorr += values["apcorr_to_total_mag"]
    values["apcorr_mag"] = apcorr
    if apcorr is None:
        values["apcorr_mag_reason"] = f"only {int(bright.sum())} bright point sources (need 3)"
    return apcorr


def _astrometry(values: dict[str, Any], objs: np.ndarray, sel: np.ndarray, pointlike: np.ndarray,
                ref: Mapping[str, np.ndarray], spec: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Offsets to the reference catalog of the clean S/N > 10 sources ``sel`` into ``values``; the matches
    (indices into ``objs[sel]`` and ``ref``)."""
    snr = objs["SNR_WIN"]
    i1, i2, dra, ddec = match_sky(objs["ALPHAWIN_J2000"][sel], objs["DELTAWIN_J2000"][sel], ref["ra"], ref["dec"],
                                  spec["match_radius_arcsec"])
    values["astrom_matches"] = len(i1)
    values["astrom_median_offset_mas"] = float(np.median(np.hypot(dra, ddec))) if len(i1) else None
    values["astrom_max_offset_mas"] = float(np.max(np.hypot(dra, ddec))) if len(i1) else None
    # the RMS is taken over bright stars (S/N > star_snr_min, point-like), whose centroids are good to a few mas,
    # so that it measures the astrometric solution rather than the centroid noise of faint sources
    bright_m = pointlike[sel][i1] & (snr[sel][i1] > spec["star_snr_min"])
    values["astrom_rms_stars"] = int(bright_m.sum())
    if bright_m.sum() >= 3:
        dra_b, ddec_b = dra[bright_m], ddec[bright_m]
        values["astrom_rms_mas"] = float(np.sqrt(np.mean(dra_b**2 + ddec_b**2) / 2))
    elif len(i1) >= 3:
        # per-axis RMS about zero: sqrt(mean(dx^2 + dy^2) / 2)
        values["astrom_rms_mas"] = float(np.sqrt(np.mean(dra**2 + ddec**2) / 2))
    else:
        values["astrom_rms_mas"] = None
        values["astrom_reason"] = f"{len(i1)} reference matches within {spec['match_radius_arcsec']} arcsec (need 3)"
    return i1, i2


def _zeropoint(values: dict[str, Any], objs: np.ndarray, sel: np.ndarray, i1: np.ndarray, i2: np.ndarray,
               pointlike: np.ndarray, apcorr: float | None, ref: Mapping[str, np.ndarray],
               spec: Mapping[str, Any]) -> None:
    """The photometric zeropoint (1 s, e-) against the reference magnitudes in this band into ``values``."""
    snr = objs["SNR_WIN"]
    if spec["ref_mag_system"] == spec["band"] and "mag" in ref:
        mag_psf = objs["MAG_PSF"][sel][i1] + (apcorr or 0.0)
        good = (mag_psf < 90) & np.isfinite(ref["mag"][i2]) & (snr[sel][i1] > spec["star_snr_min"]) \
            & pointlike[sel][i1]
        if good.sum() >= 3:
            zp_total = float(np.median(ref["mag"][i2][good] - (mag_psf[good] - spec["mag_zeropoint"])))
            values["zeropoint_1s"] = zp_total - 2.5 * math.log10(spec["exptime"])
            values["zeropoint_stars"] = int(good.sum())
        else:
            values["zeropoint_1s"] = None
            values["zeropoint_1s_reason"] = f"{int(good.sum())} matched reference stars with S/N > star_snr_min"
    else:
        values["zeropoint_1s"] = None
        values["zeropoint_1s_reason"] = (f"reference magnitudes are {spec['ref_mag_system']}, not band "
                                         f"{spec['band']}: zeropoint not measured")
