"""A simulated night: the plan (pointings, dithers, seeing, clouds) and the run that writes it.

Layout written under ``out`` (the raw-format contract shared with the single-epoch raw path)::

    raw/<camera>_<expnum:08d>.fits.fz   calib/{bias,flat_<b>,starflat_<b>,bpm}.fits
    refcat/{astrometric,photometric}.fits   truth/{objects,exposures}.fits

Exposure numbers: each night owns a block of 1000 numbers from 900000 + 1000 x (days since
2012-09-01) (DECam's first light); inside the block the seed picks the start, so two
nights never collide and a seed always gives the same numbers.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from cosmodm_ops.cameras.layout import CcdInfo, FocalPlane, focal_plane
from cosmodm_ops.config.schema import Config
from cosmodm_ops.sim.density import sky_preset
from cosmodm_ops.sim.exposure import FILTER_NAMES, ExposureSpec, simulate_exposure
from cosmodm_ops.sim.instrument import CcdSignature, airmass_from, ccd_signature
from cosmodm_ops.sim.objects import Catalog, SkyModel, make_catalog

__all__ = ["NightPlan", "expnum_start", "plan_night", "run_night", "sexagesimal"]

log = logging.getLogger(__name__)

_EPOCH = dt.date(2012, 9, 1)
_BLOCK = 1000


def expnum_start(night: str, seed: int, n: int) -> int:
    """First exposure number of a night (see the module docstring)."""
    day = (dt.date.fromisoformat(night) - _EPOCH).days
    if day < 0:
        msg = f"night {night}: simulated nights start on {_EPOCH.isoformat()} (DECam's first light)"
        raise ValueError(msg)
    if not 1 <= n <= _BLOCK:
        msg = f"--exposures {n}: expected 1..{_BLOCK} per night"
        raise ValueError(msg)
    return 900_000 + _BLOCK * day + (seed * 7919) % (_BLOCK - n + 1)


def sexagesimal(value: float, hours: bool) -> str:
    """'HH:MM:SS.ss' (RA, hours) or '+DD:MM:SS.s' (Dec)."""
    v = (value % 360.0) / 15.0 if hours else value
    sign = "-" if v < 0 else ("" if hours else "+")
    v = abs(v)
    d = int(v)
    m = int((v - d) * 60)
    s = (v - d - m / 60.0) * 3600.0
    if hours:
        return f"{sign}{d:02d}:{m:02d}:{s:05.2f}"
    return f"{sign}{d:02d}:{m:02d}:{s:04.1f}"


@dataclass
class NightPlan:
    """Everything that defines a simulated night (pure data; :func:`run_night` writes it)."""

    config: Config
    night: str
    seed: int
    bands: list[str]
    exposures: list[ExposureSpec]
    ra_range: tuple[float, float]
    dec_range: tuple[float, float]
    sky: SkyModel = field(default_factory=SkyModel)

    @property
    def focal_plane(self) -> FocalPlane:
        return focal_plane(self.config.camera)


def plan_night(config: Config, night: str, n_exposures: int, bands: list[str], *, seed: int = 0,
               cloudy: int = 0, ra: float = 60.0, dec: float = -30.0, sky: SkyModel | None = None) -> NightPlan:
    """Plan a night: dithered pointings, seeing 0.9-1.3", ``cloudy`` exposures chosen by the seed.

    Raises
    ------
    ValueError
        Bad counts or bands (the message names the value and what is expected).
    """
    survey = config.survey
    for b in bands:
        if b not in survey.zeropoint_1s or b not in survey.sky_mag_per_arcsec2:
            msg = (f"band {b!r}: survey {survey.name} has no zeropoint_1s/sky_mag_per_arcsec2 for it "
                   f"(bands: {', '.join(survey.bands)})")
            raise ValueError(msg)
    if not 0 <= cloudy <= n_exposures:
        msg = f"--cloudy {cloudy}: expected 0..{n_exposures} (the number of exposures)"
        raise ValueError(msg)
    fp = focal_plane(config.camera)
    rng = np.random.default_rng([seed, 101])
    first = expnum_start(night, seed, n_exposures)
    wx, wy = fp.extent_deg()
    cosd = math.cos(math.radians(dec))
    cloudy_idx = set(rng.choice(n_exposures, size=cloudy, replace=False).tolist()) if cloudy else set()
    start = dt.datetime.fromisoformat(night) + dt.timedelta(days=1, hours=1)
    mjd0 = (start - dt.datetime(1858, 11, 17)).total_seconds() / 86400.0
    cam = config.camera
    exposures = []
    for i in range(n_exposures):
        band = bands[i % len(bands)]
        ddx, ddy = (0.0, 0.0) if i == 0 else rng.uniform(-0.18, 0.18, 2) * (wx, wy)
        pra, pdec = ra + ddx / cosd, dec + ddy
        err = rng.uniform(0.5, 2.0)  # arcsec
        ang = rng.uniform(0, 2 * math.pi)
        era, edec = err * math.cos(ang), err * math.sin(ang)
        is_cloudy = i in cloudy_idx
        ext = rng.uniform(0.7, 1.0) if is_cloudy else rng.uniform(0.0, 0.03)
        zp = survey.zeropoint_1s[band]
        sky_e = (survey.exptime * 10.0 ** (-0.4 * (survey.sky_mag_per_arcsec2[band] - zp)) * cam.pixel_scale ** 2
                 * rng.uniform(0.95, 1.1) * (0.9 if is_cloudy else 1.0))
        exposures.append(ExposureSpec(
            expnum=first + i, band=band, ra=pra % 360.0, dec=pdec,
            ra_header=(pra + era / 3600.0 / math.cos(math.radians(pdec))) % 360.0, dec_header=pdec + edec / 3600.0,
            fwhm_arcsec=float(rng.uniform(0.9, 1.3)), beta=3.0, zeropoint_nominal=zp, extinction_mag=float(ext),
            sky_e=float(sky_e), exptime=survey.exptime,
            mjd_obs=mjd0 + i * (survey.exptime + 30.0) / 86400.0, airmass=airmass_from(rng), cloudy=is_cloudy,
            overscan_offset_adu=float(rng.uniform(-5, 5)),
        ))
    margin = 0.03 + 0.05 * max(wx, wy)
    ras = [e.ra for e in exposures]
    decs = [e.dec for e in exposures]
    hx, hy = wx / 2 + margin, wy / 2 + margin
    dmax = max(abs(d) for d in decs) + hy
    ra_range = (min(ras) - hx / math.cos(math.radians(min(dmax, 89.0))), max(ras) + hx / math.cos(math.radians(min(dmax, 89.0))))
    dec_range = (max(-90.0, min(decs) - hy), min(90.0, max(decs) + hy))
    return NightPlan(config, night, seed, list(bands), exposures, ra_range, dec_range,
                     sky or sky_preset(None, config.camera.name))


def raw_name(camera: str, expnum: int) -> str:
    """File name of a raw exposure."""
    return f"{camera}_{expnum:08d}.fits.fz"


def primary_header(plan: NightPlan, spec: ExposureSpec) -> dict[str, object]:
    """Primary-HDU keywords of a raw exposure."""
    cfg = plan.config
    t = dt.datetime(1858, 11, 17) + dt.timedelta(days=spec.mjd_obs)
    return {
        "CAMERA": (cfg.camera.name, "camera config name"),
        "INSTRUME": "DECam",
        "TELESCOP": "CTIO 4.0-m telescope",
        "OBSTYPE": "object",
        "OBJECT": f"sim {cfg.survey.name} field",
        "EXPNUM": (spec.expnum, "exposure number"),
        "FILTER": FILTER_NAMES.get(spec.band, spec.band),
        "BAND": spec.band,
        "EXPTIME": (spec.exptime, "s"),
        "MJD-OBS": spec.mjd_obs,
        "DATE-OBS": t.isoformat(timespec="microseconds"),
        "NITE": plan.night.replace("-", ""),
        "TELRA": sexagesimal(spec.ra_header, hours=True),
        "TELDEC": sexagesimal(spec.dec_header, hours=False),
        "RA": (spec.ra_header, "deg, pointing (with the simulated pointing error)"),
        "DEC": (spec.dec_header, "deg"),
        "AIRMASS": round(spec.airmass, 3),
        "SURVEY": cfg.survey.name,
        "SIMULATE": (True, "simulated by cosmodm sim night"),
        "SIMSEED": plan.seed,
    }


def signature_source(plan: NightPlan):
    """A cached ``(ccd, band) -> CcdSignature`` for the plan's camera and seed."""
    fp = plan.focal_plane
    cam = fp.camera
    big = cam.ccd_nx * cam.ccd_ny * len(fp.ccds) > 16_000_000
    size = 0 if big else 4 * len(fp.ccds) * max(1, len(plan.bands))

    @lru_cache(maxsize=size)
    def sig(ccdnum: int, band: str) -> CcdSignature:
        return ccd_signature(fp, fp.ccd(ccdnum), band, plan.seed)

    def get(ccd: CcdInfo, band: str) -> CcdSignature:
        return sig(ccd.ccdnum, band)

    return get


def make_sky(plan: NightPlan) -> Catalog:
    """The night's sky catalog (every survey band plus J)."""
    rng = np.random.default_rng([plan.seed, 202])
    bands = list(dict.fromkeys([*plan.config.survey.bands, *plan.bands]))
    return make_catalog(plan.ra_range, plan.dec_range, bands, rng, plan.sky)


def run_night(plan: NightPlan, out: Path, *, threads: int = 2, progress: bool = True) -> dict[str, object]:
    """Write the whole night under ``out`` (see the module docstring); returns a summary dict."""
    from tqdm import tqdm

    from cosmodm_ops.sim import writer

    out = Path(out)
    fp = plan.focal_plane
    catalog = make_sky(plan)
    sig = signature_source(plan)
    compress_calib = fp.camera.ccd_nx * fp.camera.ccd_ny * len(fp.ccds) > 16_000_000
    writer.write_calibs(out / "calib", fp, plan.bands, sig, compress=compress_calib)
    writer.write_refcats(out / "refcat", catalog, plan.config.survey.bands, plan.seed)
    writer.write_truth_objects(out / "truth" / "objects.fits", catalog)
    paths = []
    bar = tqdm(plan.exposures, desc=f"sim {plan.night}", unit="exp", disable=not progress)
    for spec in bar:
        hdus = simulate_exposure(fp, spec, catalog, sig, plan.seed, threads=threads)
        path = out / "raw" / raw_name(fp.camera.name, spec.expnum)
        writer.write_raw(path, primary_header(plan, spec), hdus)
        paths.append(str(path))
    writer.write_truth_exposures(out / "truth" / "exposures.fits", plan.exposures)
    return {
        "night": plan.night, "camera": fp.camera.name, "survey": plan.config.survey.name,
        "exposures": [e.expnum for e in plan.exposures], "raw": paths, "objects": len(catalog),
        "stars": int(catalog.is_star.sum()), "out": str(out),
    }
