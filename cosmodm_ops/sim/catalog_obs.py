"""Catalogue-level observation of true objects: what a coadd's dual-image catalogue would hold.

For speed (the cluster benchmark runs thousands of candidates' worth of objects on 2 shared cores),
this skips pixels: every true object gets measured fluxes with the noise of a survey of given
5-sigma depths, ``sigma_F = F(m5) / 5`` in each band (background-limited, so the same for every
object; extended objects get ``1 + r_half / FWHM`` times more in MAG_AUTO), a detection cut on the
detection band's measured S/N, MAG_DETMODEL with the noise of a PSF-matched model fit (0.8 x the
MAG_AUTO noise) and a common, colour-free offset (model magnitudes miss the same flux fraction in
every band), and SPREAD_MODEL: ``0`` for stars, a value growing with ``r_half / FWHM`` for galaxies,
plus noise ``SPREADERR_MODEL = 0.06 / (S/N)``. The columns are those of
:func:`cosmodm_ops.clusters.catalog.read_catalog` (lower-case, one row per detection).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cosmodm_ops.sim.clusters import BANDS, Objects

__all__ = ["PS1_DEPTHS", "Survey", "observe"]

PS1_DEPTHS: dict[str, float] = {"g": 23.3, "r": 23.2, "i": 23.1, "z": 22.3, "y": 21.4}
"""PS1 3pi stack 5-sigma point-source depths (Chambers et al. 2016, arXiv:1612.05560, Table 11)."""


@dataclass(frozen=True)
class Survey:
    """Depths (5-sigma AB), seeing (arcsec FWHM) and the detection band of the observed catalogue."""

    depths: dict[str, float] = field(default_factory=lambda: dict(PS1_DEPTHS))
    fwhm_arcsec: float = 1.1
    detection_band: str = "i"
    detection_snr: float = 5.0
    astrometric_sigma_arcsec: float = 0.05


def _flux(m: np.ndarray) -> np.ndarray:
    return 10.0 ** (-0.4 * (m - 30.0))


def _mag(flux: np.ndarray, err: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ok = flux > 0
    mag = np.where(ok, 30.0 - 2.5 * np.log10(np.where(ok, flux, 1.0)), 99.0)
    magerr = np.where(ok, 1.0857 * err / np.where(ok, flux, 1.0), 99.0)
    return mag.astype(np.float32), np.minimum(magerr, 99.0).astype(np.float32)


def observe(objects: Objects, survey: Survey, rng: np.random.Generator) -> np.ndarray:
    """Measured catalogue (structured array) of the detected objects; ``truth_index`` links each row to its object."""
    n = len(objects)
    ext = np.where(objects.is_star, 1.0, 1.0 + objects.r_half / survey.fwhm_arcsec)
    cols: dict[str, np.ndarray] = {}
    model_offset = np.where(objects.is_star, 0.0, rng.normal(0.08, 0.03, n))
    for b in BANDS:
        f = _flux(objects.mags[b])
        sig = _flux(np.asarray(survey.depths[b])) / 5.0
        cols[f"auto_{b}"] = _mag(f + rng.normal(0.0, 1.0, n) * sig * ext, sig * ext)
        fm = f * 10.0 ** (-0.4 * model_offset)
        cols[f"det_{b}"] = _mag(fm + rng.normal(0.0, 1.0, n) * 0.8 * sig * np.sqrt(ext), 0.8 * sig * np.sqrt(ext))
        cols[f"snr_{b}"] = (f / (sig * ext),)
    det = cols[f"auto_{survey.detection_band}"][1] < 1.0857 / survey.detection_snr
    snr = np.maximum(cols[f"snr_{survey.detection_band}"][0], 0.1)
    err = 0.06 / snr
    size = np.where(objects.is_star, 0.0, 0.012 * (objects.r_half / survey.fwhm_arcsec) ** 1.2)
    spread = size + rng.normal(0.0, 1.0, n) * err
    names = [("ra", "f8"), ("dec", "f8")]
    for b in BANDS:
        names += [(f"mag_auto_{b}", "f4"), (f"magerr_auto_{b}", "f4"),
                  (f"mag_detmodel_{b}", "f4"), (f"magerr_detmodel_{b}", "f4")]
    names += [("spread_model", "f4"), ("spreaderr_model", "f4"), ("truth_index", "i8")]
    out = np.zeros(int(det.sum()), dtype=names)
    jitter = survey.astrometric_sigma_arcsec / 3600.0
    out["dec"] = objects.dec[det] + rng.normal(0.0, jitter, out.size)
    out["ra"] = objects.ra[det] + rng.normal(0.0, jitter, out.size) / np.cos(np.radians(objects.dec[det]))
    for b in BANDS:
        out[f"mag_auto_{b}"], out[f"magerr_auto_{b}"] = (a[det] for a in cols[f"auto_{b}"])
        out[f"mag_detmodel_{b}"], out[f"magerr_detmodel_{b}"] = (a[det] for a in cols[f"det_{b}"])
    out["spread_model"], out["spreaderr_model"] = spread[det], err[det]
    out["truth_index"] = np.flatnonzero(det)
    return out
