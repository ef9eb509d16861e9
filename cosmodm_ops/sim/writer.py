"""Writers of the simulated night: raw exposures, calibrations, reference catalogs, truth.

Every file is written atomically (a temporary name in the same folder, then a rename).
Raw CCDs are lossless RICE tile-compressed (one row per tile, as DECam's raws); calibration
images are float32, uncompressed for small cameras and RICE q=16 (dithered) for DECam.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import fitsio
import numpy as np

from cosmodm_ops.cameras.layout import CcdInfo, FocalPlane
from cosmodm_ops.fits import write_images
from cosmodm_ops.sim.exposure import ExposureSpec
from cosmodm_ops.sim.instrument import CcdSignature
from cosmodm_ops.sim.objects import Catalog

__all__ = [
    "write_calibs",
    "write_raw",
    "write_refcats",
    "write_table",
    "write_truth_exposures",
    "write_truth_objects",
]


def write_table(path: Path, data: np.ndarray, extname: str, header: dict[str, object] | None = None) -> Path:
    """Write one binary table atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    os.unlink(tmp)
    try:
        with fitsio.FITS(tmp, "rw", clobber=True) as f:
            recs = [{"name": k, "value": v} for k, v in (header or {}).items()]
            f.write_table(data, extname=extname, header=recs or None)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def write_raw(path: Path, primary: dict[str, object], hdus: Sequence[tuple[str, np.ndarray, dict[str, object]]]
              ) -> Path:
    """A raw exposure: empty primary HDU, one lossless RICE-compressed uint16 HDU per CCD."""
    return write_images(path, list(hdus), compress=True, primary_header=primary)


def write_calibs(folder: Path, fp: FocalPlane, bands: Sequence[str],
                 signature: Callable[[CcdInfo, str], CcdSignature], compress: bool = False) -> list[Path]:
    """bias.fits, bpm.fits, flat_<band>.fits, starflat_<band>.fits (one HDU per CCD, trimmed frame)."""
    folder = Path(folder)
    paths = []

    def hdr(ccd: CcdInfo, **extra: object) -> dict[str, object]:
        return {"CCDNUM": ccd.ccdnum, "DETPOS": ccd.name, **extra}

    first = bands[0]
    paths.append(write_images(
        folder / "bias.fits",
        [(c.name, signature(c, first).bias_e, hdr(c, BUNIT="electrons", OBSTYPE="zero")) for c in fp.ccds],
        compress=compress, qlevel=16.0,
    ))
    paths.append(write_images(
        folder / "bpm.fits", [(c.name, signature(c, first).bpm(), hdr(c, OBSTYPE="bpm")) for c in fp.ccds],
        compress=compress,
    ))
    for band in bands:
        paths.append(write_images(
            folder / f"flat_{band}.fits",
            [(c.name, signature(c, band).dome_flat, hdr(c, BAND=band, OBSTYPE="dome flat")) for c in fp.ccds],
            compress=compress, qlevel=16.0,
        ))
        paths.append(write_images(
            folder / f"starflat_{band}.fits",
            [(c.name, signature(c, band).illum, hdr(c, BAND=band, OBSTYPE="star flat")) for c in fp.ccds],
            compress=compress, qlevel=16.0,
        ))
    return paths


def _gaia_g(cat: Catalog) -> np.ndarray:
    g, r = cat.mags["g"].astype(float), cat.mags["r"].astype(float)
    return r + 0.15 - 0.35 * (g - r)


def write_refcats(folder: Path, catalog: Catalog, bands: Sequence[str], seed: int) -> list[Path]:
    """astrometric.fits (Gaia-like) and photometric.fits (survey bands + 2MASS-like J), stars only."""
    folder = Path(folder)
    rng = np.random.default_rng([seed, 303])
    stars = catalog.subset(catalog.is_star)
    n = len(stars)
    gmag = _gaia_g(stars)
    err_mas = 0.02 + 0.5 * 10.0 ** (0.4 * (gmag - 20.0))
    cosd = np.cos(np.radians(stars.dec))
    ra_err = err_mas * rng.uniform(0.8, 1.2, n)
    dec_err = err_mas * rng.uniform(0.8, 1.2, n)
    ra = (stars.ra + rng.normal(0, 1, n) * ra_err / 3.6e6 / cosd) % 360.0
    dec = stars.dec + rng.normal(0, 1, n) * dec_err / 3.6e6
    astro = [("ra", "f8"), ("dec", "f8"), ("ra_error", "f4"), ("dec_error", "f4"), ("phot_g_mean_mag", "f4")]
    astro += [(f"mag_{b}", "f4") for b in bands]
    a = np.zeros(n, dtype=astro)
    a["ra"], a["dec"], a["ra_error"], a["dec_error"], a["phot_g_mean_mag"] = ra, dec, ra_err, dec_err, gmag
    for b in bands:
        a[f"mag_{b}"] = stars.mags[b]
    p1 = write_table(folder / "astrometric.fits", a, "ASTROMETRIC",
                     {"REFCAT": "simulated Gaia-like", "EPOCH": 2016.0})
    phot = [("ra", "f8"), ("dec", "f8")]
    for b in bands:
        phot += [(f"mag_{b}", "f4"), (f"magerr_{b}", "f4")]
    phot += [("mag_J", "f4"), ("magerr_J", "f4")]
    p = np.zeros(n, dtype=phot)
    p["ra"], p["dec"] = stars.ra, stars.dec
    for b in bands:
        err = 0.005 + 0.02 * 10.0 ** (0.4 * (stars.mags[b] - 22.0))
        p[f"mag_{b}"] = stars.mags[b] + rng.normal(0, 1, n) * err
        p[f"magerr_{b}"] = err
    j = stars.mags["J"].astype(float)
    jerr = 0.02 + 0.1 * 10.0 ** (0.4 * (j - 16.5))
    seen = j < 17.0
    p["mag_J"] = np.where(seen, j + rng.normal(0, 1, n) * jerr, np.nan)
    p["magerr_J"] = np.where(seen, jerr, np.nan)
    p2 = write_table(folder / "photometric.fits", p, "PHOTOMETRIC", {"REFCAT": "simulated, 2MASS-like J"})
    return [p1, p2]


def write_truth_objects(path: Path, catalog: Catalog) -> Path:
    """truth/objects.fits: id, ra, dec, mag_<band> (every band), is_star, r_half_arcsec, q, pa_deg."""
    n = len(catalog)
    dtype = [("id", "i8"), ("ra", "f8"), ("dec", "f8")] + [(f"mag_{b}", "f4") for b in catalog.mags]
    dtype += [("is_star", "?"), ("r_half_arcsec", "f4"), ("axis_ratio", "f4"), ("pa_deg", "f4")]
    t = np.zeros(n, dtype=dtype)
    t["id"] = np.arange(n)
    t["ra"], t["dec"] = catalog.ra, catalog.dec
    for b, m in catalog.mags.items():
        t[f"mag_{b}"] = m
    t["is_star"] = catalog.is_star
    t["r_half_arcsec"], t["axis_ratio"], t["pa_deg"] = catalog.r_half, catalog.q, catalog.pa
    return write_table(path, t, "OBJECTS")


def write_truth_exposures(path: Path, exposures: Sequence[ExposureSpec]) -> Path:
    """truth/exposures.fits: one row per exposure (zeropoints, seeing, clouds, sky, pointing and its error)."""
    dtype = [
        ("expnum", "i8"), ("band", "U4"), ("zeropoint", "f8"), ("zeropoint_nominal", "f8"),
        ("extinction_mag", "f8"), ("fwhm_arcsec", "f8"), ("moffat_beta", "f8"), ("cloudy", "?"), ("sky_e", "f8"),
        ("mjd_obs", "f8"), ("ra", "f8"), ("dec", "f8"), ("ra_header", "f8"), ("dec_header", "f8"),
        ("pointing_error_ra_arcsec", "f8"), ("pointing_error_dec_arcsec", "f8"), ("exptime", "f8"),
        ("airmass", "f8"),
    ]
    t = np.zeros(len(exposures), dtype=dtype)
    for k, e in enumerate(exposures):
        dra = ((e.ra_header - e.ra + 180.0) % 360.0 - 180.0) * math.cos(math.radians(e.dec)) * 3600.0
        t[k] = (e.expnum, e.band, e.zeropoint, e.zeropoint_nominal, e.extinction_mag, e.fwhm_arcsec, e.beta,
                e.cloudy, e.sky_e, e.mjd_obs, e.ra, e.dec, e.ra_header, e.dec_header, dra,
                (e.dec_header - e.dec) * 3600.0, e.exptime, e.airmass)
    return write_table(path, t, "EXPOSURES")
