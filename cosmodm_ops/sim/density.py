"""How many objects a real DECam survey exposure holds, and the simulator's two densities.

The single-epoch cost is set by the number of objects SExtractor measures, so the benchmark's
sky must hold what a real exposure holds. This module integrates literature number counts in r
(AB) to a limiting magnitude and gives the simulator's presets:

- ``real``: a high-latitude survey field (DES wide, |b| ~ 50 deg) -- the default for the
  full-size cameras;
- ``crowded``: the earlier default, 150,000 stars and 90,000 galaxies per square degree (a
  low-latitude field, or a cluster); kept for the small test camera (``decam-mini``: a 512 x 1024
  CCD needs >= 60 stars with S/N > 20 for PSFEx, a real high-latitude field gives it about 7).

Sources (values read from the published figures/tables to about 0.05-0.1 dex; r_AB):

- Galaxies, ``GALAXY_COUNTS_R``: SDSS r counts of Yasuda et al. (2001, AJ 122, 1104) for
  16 < r < 21; fainter, the deep-field compilation of Metcalfe et al. (2001, MNRAS 323, 795; R and
  I, converted with r_AB ~ R_Vega + 0.2) and the Hawaii HDF-N r' counts of Capak et al. (2004,
  AJ 127, 180): faint slope dlogN/dm ~ 0.33-0.37. Cross-check: N(r < 24) against 2.2e5 deg^-2 to i < 25.3 (LSST Science Book 2009, "gold sample", 4e9 galaxies over
  18,000 deg^2) scaled to r < 24 with slope 0.33 and r - i ~ 0.5 gives 5.6e4 deg^-2; the table gives
  4.3e4 (the two agree to 25%, inside the field-to-field and filter-conversion spread).
- Stars, ``STAR_COUNTS_R``: a Bahcall & Soneira (1980, ApJS 44, 73)-like disc + halo model at
  b ~ -50 deg as tabulated for DES fields with TRILEGAL (Girardi et al. 2005, A&A 436, 895):
  flattening from dlogN/dm ~ 0.2 at r = 15-20 to ~ 0.1 at r = 24 (halo).

The point-source limiting magnitude of an exposure (:func:`point_source_limit`) is the S/N of an
optimally weighted PSF flux on a Gaussian PSF (noise-equivalent area 4 pi sigma^2) over sky +
read noise: for DES r (90 s, sky 21.1 mag/arcsec^2, 1.1" seeing) S/N 10 at r = 23.2, as the DES
DR1 single-epoch median r depth (Abbott et al. 2018, ApJS 239, 18: 23.34 at S/N 10).
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from cosmodm_ops.sim.objects import SkyModel

__all__ = ["GALAXY_COUNTS_R", "PRESETS", "STAR_COUNTS_R", "cumulative", "point_source_limit", "real_counts",
           "sky_preset"]

#: r_AB, log10 dN/dm (galaxies per deg^2 per mag). See the module docstring for the sources.
GALAXY_COUNTS_R = np.array([
    (16.0, 1.30), (17.0, 1.75), (18.0, 2.20), (19.0, 2.65), (20.0, 3.05), (21.0, 3.45),
    (22.0, 3.83), (23.0, 4.20), (24.0, 4.55), (25.0, 4.88), (26.0, 5.20),
])
#: r_AB, log10 dN/dm (stars per deg^2 per mag) at b ~ -50 deg (DES wide).
STAR_COUNTS_R = np.array([
    (14.0, 1.30), (15.0, 1.50), (16.0, 1.70), (17.0, 1.90), (18.0, 2.10), (19.0, 2.30), (20.0, 2.48),
    (21.0, 2.63), (22.0, 2.77), (23.0, 2.89), (24.0, 2.99), (25.0, 3.07), (26.0, 3.14),
])


def cumulative(table: np.ndarray, m_lo: float, m_hi: float) -> float:
    """Objects per deg^2 between magnitudes m_lo and m_hi (log-linear interpolation of dN/dm)."""
    m = np.linspace(m_lo, m_hi, 2001)
    dndm = 10.0 ** np.interp(m, table[:, 0], table[:, 1])
    return float(np.trapezoid(dndm, m))


def real_counts(m_lim: float, m_bright: float = 14.0) -> dict[str, float]:
    """Stars, galaxies and all objects per deg^2 brighter than ``m_lim`` (r_AB) in a real DES-wide field."""
    stars = cumulative(STAR_COUNTS_R, m_bright, m_lim)
    gals = cumulative(GALAXY_COUNTS_R, max(m_bright, 16.0), m_lim)
    return {"stars": stars, "galaxies": gals, "all": stars + gals}


def point_source_limit(*, zeropoint_1s: float, exptime: float, sky_mag: float, pixel_scale: float,
                       fwhm_arcsec: float, readnoise_e: float, snr: float) -> float:
    """Magnitude at which an optimally measured point source has S/N = ``snr`` (sky + read noise limited)."""
    sky_e = exptime * 10.0 ** (-0.4 * (sky_mag - zeropoint_1s)) * pixel_scale ** 2
    sigma_px = fwhm_arcsec / pixel_scale / 2.3548
    area = 4.0 * math.pi * sigma_px ** 2
    # solve F^2 = snr^2 (F + area * (sky + rn^2)) for the flux F (electrons)
    b = area * (sky_e + readnoise_e ** 2)
    f = 0.5 * snr ** 2 * (1.0 + math.sqrt(1.0 + 4.0 * b / snr ** 2))
    return zeropoint_1s + 2.5 * math.log10(exptime) - 2.5 * math.log10(f)


def _powerlaw_fit(table: np.ndarray, lo: float, hi: float) -> tuple[float, float]:
    """(density per deg^2 in [lo, hi], slope) of the power law with the table's counts in [lo, hi] and to hi - 1."""
    n_all = cumulative(table, lo, hi)
    n_top = cumulative(table, hi - 1.0, hi)
    # a power law 10**(s m) puts a fraction (1 - 10**-s) / (1 - 10**(-s (hi - lo))) in the last magnitude
    frac = n_top / n_all
    s_lo, s_hi = 0.01, 1.0
    for _ in range(60):
        s = 0.5 * (s_lo + s_hi)
        f = (1 - 10 ** -s) / (1 - 10 ** (-s * (hi - lo)))
        s_lo, s_hi = (s, s_hi) if f < frac else (s_lo, s)
    return n_all, 0.5 * (s_lo + s_hi)


def _real_sky() -> SkyModel:
    stars, s_slope = _powerlaw_fit(STAR_COUNTS_R, 14.5, 25.0)
    gals, g_slope = _powerlaw_fit(GALAXY_COUNTS_R, 18.0, 25.0)
    return SkyModel(star_density=round(stars, -1), star_mag_range=(14.5, 25.0), star_slope=round(s_slope, 3),
                    galaxy_density=round(gals, -2), galaxy_mag_range=(18.0, 25.0), galaxy_slope=round(g_slope, 3))


#: The simulator's densities by name.
PRESETS: dict[str, SkyModel] = {"real": _real_sky(), "crowded": SkyModel()}
#: Cameras whose CCDs are too small for a real field's stars (PSFEx needs them): crowded by default.
_CROWDED_CAMERAS = ("decam-mini",)


def sky_preset(name: str | None, camera: str, density_scale: float = 1.0) -> SkyModel:
    """The sky of preset ``name`` (``real``, ``crowded``; None: ``real``, ``crowded`` for decam-mini)."""
    name = name or ("crowded" if camera in _CROWDED_CAMERAS else "real")
    if name not in PRESETS:
        msg = f"--density {name!r}: expected one of {', '.join(PRESETS)}"
        raise ValueError(msg)
    return replace(PRESETS[name], density_scale=density_scale)
