"""Galaxy clusters for the simulator: red-sequence members, BCG, NFW positions; a field to put them in.

A cluster of richness lambda at redshift z (:class:`ClusterSpec`) gets

- a BCG at the centre, ``m_i = m*_i(z) - 1.2 +- 0.25``, on the red sequence;
- ``lambda - 1`` red-sequence satellites brighter than ``m*_i + 1.75`` (the richness definition of
  :mod:`cosmodm_ops.clusters.redseq`) and the fainter ones down to ``m*_i + 3`` in the ratio the
  Schechter luminosity function (alpha = -1, m*(z) from the model) gives; magnitudes drawn from it;
- colours of the red sequence at z (model table, colour-magnitude slope, intrinsic scatter);
- a blue fraction (20% extra members with star-forming colours), not counted in lambda;
- positions from a projected NFW profile (c = 4) truncated at ``R_lambda = (lambda/100)**0.2`` Mpc.

:func:`make_field` draws the field around it: stars (Covey locus colours, through
:func:`cosmodm_ops.sim.objects.make_catalog`) and galaxies with ``N(< i) = 9000 deg^-2 x 10**(0.33 (i - 22))``,
30% of them red galaxies at a broad range of redshifts (so a red sequence at one z has an honest
background) and 70% blue. :func:`truth_table` writes the objects with ``cluster_id`` (-1 for the field),
``is_bcg`` and ``is_red`` beside the usual truth columns; :func:`cluster_table` the clusters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from cosmodm_ops.clusters.profile import sample_radii
from cosmodm_ops.clusters.redseq import (
    INTRINSIC_SCATTER,
    LF_ALPHA,
    RICHNESS_DELTA_MAG,
    RedSequenceModel,
    angular_radius_deg,
    lf_fraction,
    r_lambda_mpc,
)

__all__ = ["BANDS", "ClusterSpec", "Objects", "cluster_table", "inject_cluster", "make_field", "truth_table"]

BANDS = ("g", "r", "i", "z", "y")


@dataclass(frozen=True)
class ClusterSpec:
    """One injected cluster: name, centre (deg), redshift and richness (members >= 0.2 L* within R_lambda)."""

    name: str
    ra: float
    dec: float
    z: float
    richness: int


@dataclass
class Objects:
    """True objects, arrays of shape (n,): positions (deg), grizy AB magnitudes, shapes and membership."""

    ra: np.ndarray
    dec: np.ndarray
    mags: dict[str, np.ndarray]
    is_star: np.ndarray
    r_half: np.ndarray
    cluster_id: np.ndarray
    is_bcg: np.ndarray
    is_red: np.ndarray

    def __len__(self) -> int:
        return len(self.ra)

    @staticmethod
    def concat(parts: list[Objects]) -> Objects:
        def cat(name: str) -> np.ndarray:
            return np.concatenate([getattr(p, name) for p in parts])

        mags = {b: np.concatenate([p.mags[b] for p in parts]) for b in BANDS}
        return Objects(cat("ra"), cat("dec"), mags, cat("is_star"), cat("r_half"), cat("cluster_id"),
                       cat("is_bcg"), cat("is_red"))


def _offsets(ra0: float, dec0: float, r_deg: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    theta = rng.uniform(0.0, 2 * math.pi, len(r_deg))
    dec = dec0 + r_deg * np.sin(theta)
    ra = (ra0 + r_deg * np.cos(theta) / math.cos(math.radians(dec0))) % 360.0
    return ra, dec


def _schechter_mags(rng: np.random.Generator, n: int, mstar: float, lo: float, hi: float) -> np.ndarray:
    """n magnitudes from a Schechter LF (alpha = LF_ALPHA) between m* + lo and m* + hi (inverse CDF on a grid)."""
    grid = np.linspace(lo, hi, 801)
    x = 10.0 ** (-0.4 * grid)
    cdf = np.concatenate([[0.0], np.cumsum((x ** (LF_ALPHA + 1.0) * np.exp(-x))[1:] * np.diff(grid))])
    return mstar + np.interp(rng.random(n) * cdf[-1], cdf, grid)


def _red_mags(model: RedSequenceModel, z: float, m_i: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    dm = m_i - model.mstar(z)
    col = {c: model.colour(c, z, dm) + rng.normal(0.0, INTRINSIC_SCATTER[c], len(m_i))
           for c in ("g-r", "r-i", "i-z", "z-y")}
    r = m_i + col["r-i"]
    zz = m_i - col["i-z"]
    return {"g": r + col["g-r"], "r": r, "i": m_i, "z": zz, "y": zz - col["z-y"]}


def _blue_mags(m_i: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    n = len(m_i)
    gr, ri = rng.normal(0.55, 0.22, n), rng.normal(0.30, 0.14, n)
    iz, zy = rng.normal(0.15, 0.10, n), rng.normal(0.07, 0.07, n)
    r = m_i + ri
    return {"g": r + gr, "r": r, "i": m_i, "z": m_i - iz, "y": m_i - iz - zy}


def _sizes(m_i: np.ndarray, z: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Half-light radii (arcsec): ~4 kpc at m*, smaller for fainter galaxies, shrinking with distance."""
    kpc = 4.0 * 10.0 ** (-0.1 * (m_i - RedSequenceModel().mstar(z))) * np.exp(rng.normal(0.0, 0.3, len(m_i)))
    arcsec_per_mpc = angular_radius_deg(1.0, np.round(np.maximum(z, 0.02), 2)) * 3600.0
    return np.clip(kpc / 1000.0 * arcsec_per_mpc, 0.2, 6.0)


def inject_cluster(spec: ClusterSpec, index: int, rng: np.random.Generator,
                   model: RedSequenceModel | None = None) -> Objects:
    """The members of one cluster (BCG first), with ``cluster_id = index``."""
    model = model or RedSequenceModel()
    mstar = float(model.mstar(spec.z))
    n_sat = max(int(spec.richness) - 1, 0)
    n_faint = int(rng.poisson(n_sat * (1.0 / lf_fraction(RICHNESS_DELTA_MAG, delta_ref=3.0) - 1.0)))
    m_i = np.concatenate([
        [mstar - 1.2 + rng.normal(0.0, 0.25)],
        _schechter_mags(rng, n_sat, mstar, -2.5, RICHNESS_DELTA_MAG),
        _schechter_mags(rng, n_faint, mstar, RICHNESS_DELTA_MAG, 3.0),
    ])
    n_red = len(m_i)
    n_blue = int(rng.poisson(0.2 * n_red))
    m_blue = _schechter_mags(rng, n_blue, mstar, -1.0, 3.0)
    red, blue = _red_mags(model, spec.z, m_i, rng), _blue_mags(m_blue, rng)
    mags = {b: np.concatenate([red[b], blue[b]]) for b in BANDS}
    n = n_red + n_blue
    rmax_deg = float(angular_radius_deg(float(r_lambda_mpc(spec.richness)), spec.z))
    r = np.concatenate([[0.0], sample_radii(rng, n - 1) * rmax_deg])
    ra, dec = _offsets(spec.ra, spec.dec, r, rng)
    is_bcg = np.zeros(n, bool)
    is_bcg[0] = True
    is_red = np.arange(n) < n_red
    return Objects(ra, dec, mags, np.zeros(n, bool), _sizes(mags["i"], np.full(n, spec.z), rng),
                   np.full(n, index, np.int32), is_bcg, is_red)


def _field_galaxies(area: float, ra_range: tuple[float, float], dec_range: tuple[float, float],
                    rng: np.random.Generator, i_range: tuple[float, float], model: RedSequenceModel) -> Objects:
    slope, lo, hi = 0.33, *i_range
    n = int(rng.poisson(9000.0 * area * (10 ** (slope * (hi - 22.0)) - 10 ** (slope * (lo - 22.0)))))
    a, b = 10.0 ** (slope * lo), 10.0 ** (slope * hi)
    m_i = np.log10(a + rng.random(n) * (b - a)) / slope
    # redshift grows with magnitude; red field galaxies sit on the red sequence of their own z, more scattered
    z = np.clip(rng.gamma(4.0, (0.06 + 0.035 * (m_i - 16.0)) / 4.0), 0.02, 1.5)
    red = rng.random(n) < 0.3
    mags = _blue_mags(m_i, rng)
    zr = np.minimum(z[red], model.z_range[1])
    rm = {b: np.empty(int(red.sum())) for b in BANDS}
    for zbin in np.unique(np.round(zr, 2)):
        sel = np.round(zr, 2) == zbin
        part = _red_mags(model, float(zbin), m_i[red][sel], rng)
        for band in BANDS:
            rm[band][sel] = part[band] + rng.normal(0.0, 0.04, int(sel.sum()))
    for band in BANDS:
        mags[band][red] = rm[band]
    s0, s1 = (math.sin(math.radians(d)) for d in dec_range)
    dec = np.degrees(np.arcsin(s0 + rng.random(n) * (s1 - s0)))
    ra = (ra_range[0] + rng.random(n) * (ra_range[1] - ra_range[0])) % 360.0
    return Objects(ra, dec, mags, np.zeros(n, bool), _sizes(m_i, z, rng), np.full(n, -1, np.int32),
                   np.zeros(n, bool), red)


def _stars(ra_range: tuple[float, float], dec_range: tuple[float, float], rng: np.random.Generator,
           density: float) -> Objects:
    from cosmodm_ops.sim.objects import SkyModel, make_catalog

    sky = replace(SkyModel(), star_density=density, galaxy_density=0.0, star_mag_range=(15.0, 23.5))
    cat = make_catalog(ra_range, dec_range, ["g", "r", "i", "z", "Y"], rng, sky)
    mags = {b: cat.mags["Y" if b == "y" else b].astype(float) for b in BANDS}
    n = len(cat)
    return Objects(cat.ra, cat.dec, mags, np.ones(n, bool), np.zeros(n), np.full(n, -1, np.int32),
                   np.zeros(n, bool), np.zeros(n, bool))


def make_field(ra_range: tuple[float, float], dec_range: tuple[float, float], clusters: list[ClusterSpec],
               rng: np.random.Generator, *, star_density: float = 3000.0,
               i_range: tuple[float, float] = (15.5, 24.0), first_index: int = 0) -> Objects:
    """Stars, field galaxies and the given clusters in an RA/Dec box (degrees); cluster k gets id first_index + k."""
    from cosmodm_ops.sim.objects import box_area_deg2

    model = RedSequenceModel()
    parts = [_stars(ra_range, dec_range, rng, star_density),
             _field_galaxies(box_area_deg2(ra_range, dec_range), ra_range, dec_range, rng, i_range, model)]
    parts += [inject_cluster(c, first_index + k, rng, model) for k, c in enumerate(clusters)]
    return Objects.concat(parts)


def truth_table(objects: Objects) -> np.ndarray:
    """The objects' truth as a structured array (``truth/objects.fits`` columns plus membership)."""
    cols = [("ra", "f8"), ("dec", "f8"), *[(f"mag_{b}", "f4") for b in BANDS], ("is_star", "?"),
            ("r_half_arcsec", "f4"), ("cluster_id", "i4"), ("is_bcg", "?"), ("is_red", "?")]
    out = np.zeros(len(objects), dtype=cols)
    out["ra"], out["dec"] = objects.ra, objects.dec
    for b in BANDS:
        out[f"mag_{b}"] = objects.mags[b]
    out["is_star"], out["r_half_arcsec"] = objects.is_star, objects.r_half
    out["cluster_id"], out["is_bcg"], out["is_red"] = objects.cluster_id, objects.is_bcg, objects.is_red
    return out


def cluster_table(clusters: list[ClusterSpec]) -> np.ndarray:
    """The clusters' truth: name, ra, dec, z, richness, r_lambda_mpc (a structured array)."""
    out = np.zeros(len(clusters), dtype=[("name", "U32"), ("ra", "f8"), ("dec", "f8"), ("z", "f4"),
                                         ("richness", "i4"), ("r_lambda_mpc", "f4")])
    for k, c in enumerate(clusters):
        out[k] = (c.name, c.ra, c.dec, c.z, c.richness, float(r_lambda_mpc(c.richness)))
    return out
