"""The simulated sky: stars on the stellar locus and galaxies, in a box around the night's pointings.

Stars follow a power-law number count ``dN/dm ~ 10**(slope m)`` in r between the bright
and faint limits; their colours come from the Covey et al. (2007) median stellar locus
(``real:stellar_locus/covey_medianlocus.tbl``, read with
:func:`cosmodm_ops.coadd.locus.read_covey_locus`) at a g-i drawn from a disc + M-dwarf mix,
with a small intrinsic scatter. Galaxies are exponential discs (half-light radius, axis
ratio, position angle) with colours between blue and red, fainter on average.
Positions are uniform on the sphere inside the box. Everything is drawn from one
``numpy.random.Generator``: a seed gives the same sky.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Catalog", "SkyModel", "box_area_deg2", "make_catalog", "tangent_plane"]


@dataclass(frozen=True)
class SkyModel:
    """Densities and magnitude ranges of the simulated sky (r-band magnitudes).

    The default star density is high (a low-latitude field): the single-epoch pipeline
    needs >= 100 stars with S/N > 20 per 512 x 1024 decam-mini CCD for PSFEx and SCAMP.
    """

    star_density: float = 150_000.0
    """Stars per square degree between ``star_mag_range``."""
    star_mag_range: tuple[float, float] = (14.5, 23.5)
    star_slope: float = 0.2
    galaxy_density: float = 90_000.0
    """Galaxies per square degree between ``galaxy_mag_range``."""
    galaxy_mag_range: tuple[float, float] = (18.5, 24.5)
    galaxy_slope: float = 0.33
    density_scale: float = 1.0
    """Multiplies both densities (a slow test may thin the sky; the layout stays real)."""


@dataclass
class Catalog:
    """Simulated objects. Arrays of shape (n,).

    Attributes
    ----------
    ra, dec : ndarray
        Degrees (ICRS).
    mags : dict of str to ndarray
        AB magnitudes per band (every survey band plus ``J``).
    is_star : ndarray of bool
    r_half : ndarray
        Galaxy half-light radius along the major axis (arcsec); 0 for stars.
    q, pa : ndarray
        Axis ratio (b/a) and position angle (degrees, from +Dec through +RA); 1 and 0 for stars.
    """

    ra: np.ndarray
    dec: np.ndarray
    mags: dict[str, np.ndarray]
    is_star: np.ndarray
    r_half: np.ndarray
    q: np.ndarray
    pa: np.ndarray

    def __len__(self) -> int:
        return len(self.ra)

    def subset(self, sel: np.ndarray) -> Catalog:
        """A new catalog with the selected rows."""
        return Catalog(self.ra[sel], self.dec[sel], {b: m[sel] for b, m in self.mags.items()},
                       self.is_star[sel], self.r_half[sel], self.q[sel], self.pa[sel])


def box_area_deg2(ra_range: tuple[float, float], dec_range: tuple[float, float]) -> float:
    """Area (square degrees) of an RA/Dec box on the sphere."""
    d0, d1 = (math.radians(d) for d in dec_range)
    return math.degrees(1.0) * (ra_range[1] - ra_range[0]) * (math.sin(d1) - math.sin(d0))


def _powerlaw_mags(rng: np.random.Generator, n: int, lo: float, hi: float, slope: float) -> np.ndarray:
    """Magnitudes with dN/dm ~ 10**(slope m) between lo and hi (inverse CDF)."""
    a, b = 10.0 ** (slope * lo), 10.0 ** (slope * hi)
    return np.log10(a + rng.random(n) * (b - a)) / slope


def _star_colours(rng: np.random.Generator, n: int, locus_path: str | None) -> dict[str, np.ndarray]:
    from cosmodm_ops.coadd.locus import read_covey_locus

    locus = read_covey_locus(locus_path)
    lo, hi = float(locus.gi.min()), min(float(locus.gi.max()), 3.4)
    disc = rng.normal(0.85, 0.3, n)
    dwarf = 1.4 + rng.exponential(0.6, n)
    gi = np.clip(np.where(rng.random(n) < 0.7, disc, dwarf), max(lo, 0.25), hi)
    cols = locus.at_gi(gi)
    out = {}
    for name in ("g-r", "r-i", "i-z", "z-J"):
        out[name] = cols[name] + rng.normal(0.0, 0.015, n)
    return out


def make_catalog(
    ra_range: tuple[float, float],
    dec_range: tuple[float, float],
    bands: list[str],
    rng: np.random.Generator,
    model: SkyModel | None = None,
    locus_path: str | None = None,
) -> Catalog:
    """Draw stars and galaxies in an RA/Dec box.

    Parameters
    ----------
    ra_range, dec_range : (float, float)
        The box (degrees); RA may run past 360 (wrapped on output).
    bands : list of str
        Bands to give magnitudes in (from g, r, i, z, Y, u); ``J`` is always added.
    rng : numpy.random.Generator
    model : SkyModel, optional
    locus_path : str, optional
        Stellar locus table (default: the Covey median locus in the real-data folder).
    """
    model = model or SkyModel()
    area = box_area_deg2(ra_range, dec_range)
    n_star = int(rng.poisson(model.star_density * model.density_scale * area))
    n_gal = int(rng.poisson(model.galaxy_density * model.density_scale * area))
    n = n_star + n_gal
    s0, s1 = (math.sin(math.radians(d)) for d in dec_range)
    dec = np.degrees(np.arcsin(s0 + rng.random(n) * (s1 - s0)))
    ra = (ra_range[0] + rng.random(n) * (ra_range[1] - ra_range[0])) % 360.0
    is_star = np.zeros(n, bool)
    is_star[:n_star] = True

    r = np.empty(n)
    r[:n_star] = _powerlaw_mags(rng, n_star, *model.star_mag_range, model.star_slope)
    r[n_star:] = _powerlaw_mags(rng, n_gal, *model.galaxy_mag_range, model.galaxy_slope)

    sc = _star_colours(rng, n_star, locus_path)
    t = rng.random(n_gal)  # 0 = blue star-forming, 1 = red sequence
    gc = {
        "g-r": 0.35 + 0.85 * t + rng.normal(0, 0.05, n_gal),
        "r-i": 0.15 + 0.35 * t + rng.normal(0, 0.04, n_gal),
        "i-z": 0.05 + 0.30 * t + rng.normal(0, 0.04, n_gal),
        "z-J": 0.60 + 0.40 * t + rng.normal(0, 0.05, n_gal),
    }
    colour = {k: np.concatenate([sc[k], gc[k]]) for k in sc}
    mags: dict[str, np.ndarray] = {"r": r}
    mags["g"] = r + colour["g-r"]
    mags["i"] = r - colour["r-i"]
    mags["z"] = mags["i"] - colour["i-z"]
    mags["J"] = mags["z"] - colour["z-J"]
    mags["Y"] = mags["z"] - 0.45 * colour["z-J"]
    mags["u"] = mags["g"] + 1.2 + 0.8 * colour["g-r"]
    unknown = [b for b in bands if b not in mags]
    if unknown:
        msg = f"cannot simulate band(s) {unknown}; known: {sorted(mags)}"
        raise ValueError(msg)
    mags = {b: mags[b].astype(np.float32) for b in [*dict.fromkeys([*bands, "J"])]}

    r_half = np.zeros(n, np.float32)
    q = np.ones(n, np.float32)
    pa = np.zeros(n, np.float32)
    med = 0.9 * 10.0 ** (-0.12 * (r[n_star:] - 21.0))
    r_half[n_star:] = np.clip(med * np.exp(rng.normal(0, 0.35, n_gal)), 0.25, 4.0)
    q[n_star:] = rng.uniform(0.3, 1.0, n_gal)
    pa[n_star:] = rng.uniform(0.0, 180.0, n_gal)
    return Catalog(ra, dec, mags, is_star, r_half, q, pa)


def tangent_plane(ra: np.ndarray, dec: np.ndarray, ra0: float, dec0: float) -> tuple[np.ndarray, np.ndarray]:
    """Gnomonic (TAN) standard coordinates (xi east, eta north) in degrees about (ra0, dec0).

    Points more than 90 degrees away get NaN.
    """
    a = np.radians(np.asarray(ra, float) - ra0)
    d = np.radians(np.asarray(dec, float))
    d0 = math.radians(dec0)
    cosc = math.sin(d0) * np.sin(d) + math.cos(d0) * np.cos(d) * np.cos(a)
    with np.errstate(divide="ignore", invalid="ignore"):
        xi = np.cos(d) * np.sin(a) / cosc
        eta = (math.cos(d0) * np.sin(d) - math.sin(d0) * np.cos(d) * np.cos(a)) / cosc
    bad = cosc <= 0
    xi[bad] = np.nan
    eta[bad] = np.nan
    return np.degrees(xi), np.degrees(eta)
