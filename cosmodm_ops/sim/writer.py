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
from cosmodm_ops.fits import atomic_fits, write_images
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
    with atomic_fits(path) as f:
        recs = [{"name": k, "value": v} for k, v in (header or {}).items()]
        f.write_table(data, extname=extname, header=recs or None)
    return path


def write_raw(path: Path, primary: dict[str, object], hdus: Sequence[tuple[str, np.ndarray, dict[str, object]]]
              ) -> Path:
    """A raw exposure: empty primary HDU, one lossless RICE-compressed uint16 HDU per CCD."""
    return write_images(path, list(hdus), compress=True, primary_header=primary)


class _AtomicFits:
    """Several FITS files written side by side under temporary names, renamed together on success."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self.paths = [Path(p) for p in paths]
        self.tmps: list[str] = []
        self.files: list[fitsio.FITS] = []

    def __enter__(self) -> list[fitsio.FITS]:
        for p in self.paths:
            p.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".part", dir=p.parent)
            os.close(fd)
            os.unlink(tmp)
            self.tmps.append(tmp)
            self.files.append(fitsio.FITS(tmp, "rw", clobber=True))
        return self.files

    def __exit__(self, exc_type, exc, tb) -> None:
        for f in self.files:
            f.close()
        if exc_type is None:
            for tmp, p in zip(self.tmps, self.paths):
                os.replace(tmp, p)
        else:
            for tmp in self.tmps:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)


#: Absolute quantization steps of the compressed (large-camera) flats; the bias is compressed losslessly
#: (GZIP_2 in tiles of rows: its pattern repeats from row to row).
CALIB_STEPS = {"flat": 4e-4, "starflat": 2e-5}


def write_calibs(folder: Path, fp: FocalPlane, bands: Sequence[str],
                 signature: Callable[[CcdInfo, str], CcdSignature], compress: bool = False) -> list[Path]:
    """bias.fits, bpm.fits, flat_<band>.fits, starflat_<band>.fits (one HDU per CCD, trimmed frame).

    Each CCD's signatures are computed once per band and streamed into every file. With
    ``compress`` the float images are RICE-compressed with the absolute quantization steps of
    :data:`CALIB_STEPS` (errors at most half a step: 2e-4 of the flat) and the bad-pixel map losslessly.
    """
    folder = Path(folder)
    names = ["bias", "bpm"] + [f"{kind}_{b}" for b in bands for kind in ("flat", "starflat")]
    paths = [folder / f"{n}.fits" for n in names]

    def put(f: fitsio.FITS, data: np.ndarray, ccd: CcdInfo, step: float | None, **extra: object) -> None:
        hdr = [{"name": "CCDNUM", "value": ccd.ccdnum}, {"name": "DETPOS", "value": ccd.name}]
        hdr += [{"name": k, "value": v} for k, v in extra.items()]
        kw: dict[str, object] = {}
        if compress and step == 0.0:
            kw = {"compress": "GZIP_2", "qlevel": 0, "tile_dims": [min(256, data.shape[0]), data.shape[1]]}
        elif compress:
            kw = {"compress": "RICE", "tile_dims": [1, data.shape[1]]}
            if step is not None:
                kw.update(qlevel=-step, qmethod="SUBTRACTIVE_DITHER_1", dither_seed=1 + ccd.ccdnum % 10000)
        f.write_image(data, extname=ccd.name, header=hdr, **kw)

    with _AtomicFits(paths) as files:
        for f in files:  # an empty primary HDU: every CCD is an extension
            f.write_image(None)
        out = dict(zip(names, files))
        for c in fp.ccds:
            for i, band in enumerate(bands):
                sig = signature(c, band)
                if i == 0:
                    put(out["bias"], sig.bias_e, c, 0.0, BUNIT="electrons", OBSTYPE="zero")
                    put(out["bpm"], sig.bpm(), c, None, OBSTYPE="bpm")
                put(out[f"flat_{band}"], sig.dome_flat, c, CALIB_STEPS["flat"], BAND=band, OBSTYPE="dome flat")
                put(out[f"starflat_{band}"], sig.illum, c, CALIB_STEPS["starflat"], BAND=band,
                    OBSTYPE="star flat")
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
