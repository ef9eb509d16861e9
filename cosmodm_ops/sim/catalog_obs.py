"""Catalogue-level observation of true objects: what a coadd's dual-image catalogue would hold.

For speed (the cluster benchmark runs thousands of candidates' worth of objects on 2 shared cores),
this skips pixels: every true object gets measured fluxes with the noise of a survey of given
5-sigma depths, ``sigma_F = F(m5) / 5`` in each band (background-limited, so the same for every
object; extended objects get ``1 + r_half / FWHM`` times more in MAG_AUTO), a detection cut on the
detection band's measured S/N, MAG_DETMODEL with the noise of a PSF-matched model fit (0.8 x the
MAG_AUTO noise) and a common, colour-free offset (model magnitudes miss the same flux fraction in
every band), and SPREAD_MODEL and SPREADERR_MODEL as the image level measures them
(:func:`spread_model`, calibrated on the dual-image catalogues of the image-level cluster benchmark
matched to their truth: a size term ``f(r_half / FWHM)`` that the i magnitude scales and shifts,
suppressed, even negative, for galaxies fainter than i ~21). The columns are those of
:func:`cosmodm_ops.clusters.catalog.read_catalog` (lower-case, one row per detection).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cosmodm_ops.sim.clusters import BANDS, Objects

__all__ = ["PS1_DEPTHS", "SPREAD_TABLE", "Survey", "observe", "spread_model", "spread_size_term"]

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


#: SPREAD_MODEL at the image level against the true i magnitude and size, measured on the dual-image
#: catalogues of the image-level cluster benchmark (simulated PS1 coadds, 0.5" pixels, FWHM 1.1" in i;
#: SExtractor + PSFEx) matched to their truth (0.6"): 3470 objects of 2 candidates (PSZ-SIM024, -061),
#: 2026-12-06. Per i-magnitude node: median ``a * f + c`` (f = :func:`spread_size_term`), scatter (NMAD)
#: ``s0 + s1 * f`` (s0: the stars' NMAD), median SPREADERR_MODEL of stars and of galaxies and its log-normal scatter. Against
#: magnitude, not S/N: this simulator's S/N at a given i is 1.6-2.5x the image level's (MAGERR_AUTO).
#: Columns: mag_i, a, c, s0, s1, err_star, err_galaxy, log_err_sigma.
SPREAD_TABLE = np.array([
    (17.00, 0.970, 0.00120, 0.0002, 0.057, 0.00012, 0.00056, 0.43),
    (18.25, 0.964, 0.00099, 0.0002, 0.073, 0.00024, 0.00068, 0.45),
    (19.00, 0.954, 0.00120, 0.0003, 0.059, 0.00036, 0.00085, 0.42),
    (19.75, 0.960, 0.00101, 0.0005, 0.092, 0.00042, 0.00117, 0.43),
    (20.25, 0.882, 0.00019, 0.0004, 0.134, 0.00052, 0.00131, 0.43),
    (20.75, 0.577, 0.00053, 0.0004, 0.224, 0.00035, 0.00110, 0.50),
    (21.25, 0.031, 0.00049, 0.0014, 0.245, 0.00104, 0.00081, 0.77),
    (21.75, -0.678, -0.00056, 0.0026, 0.472, 0.00188, 0.00344, 0.84),
    (22.25, -1.189, -0.00105, 0.0045, 0.259, 0.00589, 0.00663, 0.22),
])


def spread_size_term(x: np.ndarray) -> np.ndarray:
    """SPREAD_MODEL of a galaxy of half-light radius ``x`` FWHM at high S/N (> 20): ``0.0363 x**2.38 / (0.397 +
    x**2.38)`` (fit to 823 image-level galaxies, NMAD of the residuals 0.0018; 0 for a star)."""
    x = np.asarray(x, float)
    return 0.03626 * x**2.38 / (0.3975 + x**2.38)


def spread_model(x: np.ndarray, mag_i: np.ndarray, is_star: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """SPREAD_MODEL and SPREADERR_MODEL of objects of size ``x`` (r_half / FWHM; 0: a star) and true i magnitude
    ``mag_i``, drawn from :data:`SPREAD_TABLE` (its columns interpolated in magnitude, constant past its ends)."""
    a, c, s0, s1, e_star, e_gal, le = (np.interp(mag_i, SPREAD_TABLE[:, 0], SPREAD_TABLE[:, k]) for k in range(1, 8))
    f = spread_size_term(x)
    n = len(f)
    spread = a * f + c + rng.normal(0.0, 1.0, n) * (s0 + s1 * f)
    err = np.where(is_star, e_star, e_gal) * np.exp(rng.normal(0.0, 1.0, n) * le)
    return spread, err


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
    spread, err = spread_model(np.where(objects.is_star, 0.0, objects.r_half / survey.fwhm_arcsec),
                               objects.mags["i"], objects.is_star, rng)
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
