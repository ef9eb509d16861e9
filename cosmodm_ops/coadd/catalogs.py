"""Stages ``decompress``, ``psf`` and ``catalogs`` of the tile calibration: SExtractor and PSFEx on the band coadds.

- :func:`prepare_band` (decompress): a band's homogenized coadd and weight read, with the
  SExtractor settings they imply (saturation, seeing, Moffat beta) and plain copies in the
  work folder;
- :func:`coadd_psf` (psf): SExtractor + PSFEx on a band's coadd (the model for MAG_PSF and
  SPREAD_MODEL);
- :func:`dual_image_catalog` (catalogs): SExtractor in dual-image mode (detection image, band image);
- :func:`aperture_correction`, :func:`moffat_to_total` (pure): MAG_PSF -> the largest aperture
  (measured on the stars) -> total (the homogenized PSF is a known Moffat);
- :func:`write_catalog`: the calibrated catalog product (every MAG_* + dzp, MAG_PSF + apcorr).

SExtractor and PSFEx are outside programs that work on files: their stages are thin wrappers
around :func:`cosmodm_ops.astromatic.run_tool`, and the catalogs they return are the inputs of
the pure steps (:mod:`~cosmodm_ops.coadd.abscal`, :mod:`~cosmodm_ops.coadd.truth`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cosmodm_ops.coadd.imageio import read_image, write_plain
from cosmodm_ops.coadd.inputs import BandCoadd, CoaddBadInput
from cosmodm_ops.coadd.tiling import Tile
from cosmodm_ops.config import Config

#: PSFEx PSF_SIZE of the coadd PSF models (the single-epoch size is single_epoch.psf_size).
COADD_PSF_SIZE = 35

__all__ = [
    "APERTURES",
    "BandImage",
    "aperture_correction",
    "check_same_grid",
    "check_same_length",
    "coadd_psf",
    "dual_image_catalog",
    "moffat_to_total",
    "prepare_band",
    "total_correction",
    "write_catalog",
]

#: Diameters (pixels) of SExtractor's PHOT_APERTURES (the defaults of :func:`sextractor_args`).
APERTURES = (7.0, 12.0, 20.0)


@dataclass
class BandImage:
    """One band's homogenized coadd in memory and as plain files for SExtractor.

    Attributes
    ----------
    image, weight : ndarray, shape (npix, npix)
    header : astropy.io.fits.Header
    saturation : float
        SExtractor SATUR_LEVEL: ten times the brightest covered pixel, at least 1e6 (a coadd has
        no saturation, and SExtractor refuses 1e30).
    fwhm_px : float
        PSF FWHM in pixels (header ``PSF_FWHM`` / pixel scale; 1 without).
    beta : float or None
        Moffat beta of the PSF (header ``PSF_BETA``).
    plain : dict str -> Path
        ``image``, ``weight``, ``flag`` (weight <= 0) in the work folder.
    """

    image: np.ndarray
    weight: np.ndarray
    header: Any
    saturation: float
    fwhm_px: float
    beta: float | None
    plain: dict[str, Path]


def prepare_band(band: BandCoadd, tile: Tile, work: Path) -> BandImage:
    """Read a band's homogenized coadd and weight and write the plain image, weight and flag copies."""
    b = band.band
    img, hdr = read_image(band.image)
    wt, _ = read_image(band.weight)
    # no saturation on a coadd (SExtractor refuses 1e30): ten times the brightest pixel
    satur = float(max(10.0 * np.nanmax(img[wt > 0]) if (wt > 0).any() else 0.0, 1e6))
    plain = {"image": write_plain(work / f"{b}.fits", img, hdr),
             "weight": write_plain(work / f"{b}.weight.fits", wt, hdr),
             "flag": write_plain(work / f"{b}.flag.fits", (wt <= 0), hdr, np.int32)}
    return BandImage(img, wt, hdr, satur, float(hdr.get("PSF_FWHM", 1.0)) / tile.pixel_scale,
                     float(hdr["PSF_BETA"]) if "PSF_BETA" in hdr else None, plain)


def check_same_grid(tile: str, bands: Mapping[str, BandImage]) -> None:
    """Raise CoaddBadInput when the band coadds are not on one pixel grid."""
    first = next(iter(bands))
    for b, im in bands.items():
        if im.image.shape != bands[first].image.shape:
            msg = f"tile {tile}: coadd of band {b} has shape {im.image.shape}, band {first} " \
                  f"{bands[first].image.shape}: not the same tile grid"
            raise CoaddBadInput(msg)


def _sextractor_common(im: BandImage, tile: Tile, cfg: Config) -> dict[str, Any]:
    se = cfg.single_epoch
    return {"gain": 0.0, "saturate": im.saturation, "pixel_scale": tile.pixel_scale,
            "seeing_arcsec": im.fwhm_px * tile.pixel_scale, "detect_thresh": se.detect_thresh,
            "detect_minarea": se.detect_minarea, "mag_zeropoint": cfg.coadd.magzero}


def coadd_psf(b: str, im: BandImage, tile: Tile, cfg: Config, work: Path, psf_size: int = COADD_PSF_SIZE) -> Path:
    """SExtractor (pass-1 parameters) and PSFEx on a band's coadd: the PSFEx model file.

    ``psf_size``: PSFEx PSF_SIZE (the cluster chain's coarse-pixel tiles use a smaller one: model
    fitting in the dual-image catalogs costs about its square).

    The model varies over the tile (``single_epoch.psfvar_degrees``) when SExtractor found at
    least 200 candidates, else it is constant.

    Raises
    ------
    CoaddBadInput
        PSFEx wrote no model.
    """
    from cosmodm_ops.astromatic import psfex_args, read_ldac, run_tool, sextractor_args

    se = cfg.single_epoch
    cat1 = work / f"{b}.pass1.ldac"
    run_tool("sextractor", sextractor_args(
        im.plain["image"], cat1, weight=im.plain["weight"], flag=im.plain["flag"],
        params="single_epoch_pass1.param", **_sextractor_common(im, tile, cfg)), cwd=work)
    n_cand = len(read_ldac(cat1, columns=["FLAGS"]))
    degrees = se.psfvar_degrees if n_cand >= 200 else 0
    # the coadd keeps the 35-pixel model its tests were set on (single_epoch.psf_size went to 25 in issue 18)
    run_tool("psfex", psfex_args(cat1, psf_size=psf_size, psfvar_degrees=degrees, outdir=work), cwd=work)
    psf = work / f"{b}.pass1.psf"
    if not psf.exists():
        msg = f"tile {tile.name} band {b}: PSFEx wrote no model (too few stars on the coadd?)"
        raise CoaddBadInput(msg)
    return psf


def dual_image_catalog(b: str, im: BandImage, psf: Path, det: tuple[Path, Path], tile: Tile, cfg: Config,
                       work: Path, det_psf: Path | None = None) -> tuple[np.ndarray, Path]:
    """SExtractor in dual-image mode: detection on ``det`` (image, weight), measurement on the band.

    The parameters are ``coadd.catalog_params`` (MAG_DETMODEL: the galaxy model fitted on the
    detection image, only its amplitude in the band, with the band's PSFEx model ``psf``; the
    coadds are PSF-homogenized, so that model is the detection image's PSF too). Coadds that are
    not homogenized (the cluster chain's) give the detection image's own PSF as ``det_psf``.

    Returns
    -------
    catalog : ndarray
        The ``LDAC_OBJECTS`` table.
    path : Path
        The FITS_LDAC file in ``work``.
    """
    from cosmodm_ops.astromatic import read_ldac, run_tool, sextractor_args

    det_p, det_wp = det
    cat = work / f"{b}.dual.ldac"
    run_tool("sextractor", sextractor_args(
        f"{det_p},{im.plain['image']}", cat, weight=f"{det_wp},{im.plain['weight']}",
        flag=im.plain["flag"], params=cfg.coadd.catalog_params, psf=f"{det_psf or psf},{psf}",
        **_sextractor_common(im, tile, cfg), extra={"WEIGHT_TYPE": "MAP_WEIGHT,MAP_WEIGHT"}), cwd=work)
    return read_ldac(cat), cat


def check_same_length(tile: str, cats: Mapping[str, np.ndarray]) -> dict[str, int]:
    """The number of objects of each band's dual-image catalog; CoaddBadInput unless all are equal."""
    sizes = {b: len(c) for b, c in cats.items()}
    if len(set(sizes.values())) != 1:
        msg = f"tile {tile}: dual-image catalogs differ in length {sizes}: detection image mismatch"
        raise CoaddBadInput(msg)
    return sizes


def aperture_correction(cat: np.ndarray, spread_max: float) -> float | None:
    """Median MAG_APER (largest aperture) - MAG_PSF of bright unflagged point sources; None with fewer than 3."""
    pointlike = np.abs(cat["SPREAD_MODEL"]) < spread_max
    bright = (cat["FLAGS"] == 0) & pointlike & (cat["SNR_WIN"] > 20) & (cat["MAG_PSF"] < 90) & \
        (cat["MAG_APER"][:, -1] < 90)
    if bright.sum() < 3:
        return None
    return float(np.median(cat["MAG_APER"][:, -1][bright] - cat["MAG_PSF"][bright]))


def moffat_to_total(beta: float | None, fwhm_px: float) -> float:
    """Magnitude correction from the largest aperture to total flux for a Moffat PSF (0 without beta).

    The flux of a Moffat inside radius R is ``1 - (1 + R^2/alpha^2)^(1-beta)``: with beta 2.5
    and a 4.5-pixel FWHM, 5% of the light falls outside a 20-pixel aperture.
    """
    if beta is None or beta <= 1:
        return 0.0
    alpha = fwhm_px / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))
    r = max(APERTURES) / 2.0
    inside = 1.0 - (1.0 + (r / alpha) ** 2) ** (1.0 - beta)
    return float(2.5 * math.log10(inside))


def write_catalog(src: Path, dst: Path, dzp: float, apcorr: float, magzero: float) -> Path:
    """The dual-image catalog with calibrated magnitudes: ``dzp`` added to every MAG_*, ``apcorr`` to MAG_PSF."""
    from astropy.io import fits as afits

    with afits.open(src) as hdul:
        for hdu in hdul:
            if hdu.name != "LDAC_OBJECTS":
                continue
            for col in hdu.columns.names:
                if col.startswith("MAG_") and len(hdu.data):
                    m = hdu.data[col]
                    ok = m < 90
                    m[ok] = m[ok] + dzp + (apcorr if col == "MAG_PSF" else 0.0)
            hdu.header["MAGZERO"] = (magzero + dzp, "[mag] calibrated zeropoint")
            hdu.header["DZP"] = (dzp, "[mag] locus correction in MAG_*")
            hdu.header["APCORR"] = (apcorr, "[mag] aperture corr. in MAG_PSF")
        tmp = dst.with_name(f".{dst.name}.part")
        hdul.writeto(tmp, overwrite=True)
    os.replace(tmp, dst)
    return dst


def total_correction(cat: np.ndarray, spread_max: float, beta: float | None, fwhm_px: float) -> float:
    """MAG_PSF -> total: the aperture correction measured on the stars (0 with too few) + the Moffat wings."""
    return (aperture_correction(cat, spread_max) or 0.0) + moffat_to_total(beta, fwhm_px)
