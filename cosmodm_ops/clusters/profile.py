"""The projected NFW profile: surface density, enclosed fraction, sampling, and the finder's radial filter.

Radii are in units of the truncation radius (``x = R / R_max``); the scale radius is
``R_max / concentration``. Formulas: Bartelmann (1996) / Wright & Brainerd (2000),
``Sigma(X) ~ (1 - F(X)) / (X**2 - 1)`` and projected mass ``M(<X) ~ ln(X / 2) + F(X)`` with
``F(X) = arccosh(1/X) / sqrt(1 - X**2)`` (X < 1), ``arccos(1/X) / sqrt(X**2 - 1)`` (X > 1).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["CONCENTRATION", "CORE", "filter_weight", "member_filter_mean", "sample_radii", "sigma_nfw"]

CONCENTRATION = 4.0
"""Concentration of the simulated members and of the finder's filter."""
CORE = 0.1
"""The filter is flat inside this fraction of the aperture (100 kpc for 1 Mpc): a BCG at the centre
counts a few members' worth, not twenty."""


def _f(x: np.ndarray) -> np.ndarray:
    x = np.maximum(np.asarray(x, float), 1e-6)
    out = np.ones_like(x)
    lo, hi = x < 1.0 - 1e-9, x > 1.0 + 1e-9
    out[lo] = np.arccosh(1.0 / x[lo]) / np.sqrt(1.0 - x[lo] ** 2)
    out[hi] = np.arccos(1.0 / x[hi]) / np.sqrt(x[hi] ** 2 - 1.0)
    return out


def sigma_nfw(x: np.ndarray, c: float = CONCENTRATION) -> np.ndarray:
    """Projected NFW surface density (arbitrary units) at ``x = R / R_max``, shape of x."""
    xs = np.maximum(np.asarray(x, float) * c, 1e-3)
    near = np.abs(xs - 1.0) < 1e-4
    out = (1.0 - _f(xs)) / np.where(near, 1.0, xs**2 - 1.0)
    return np.where(near, 1.0 / 3.0, out)


def _mass2d(x: np.ndarray, c: float) -> np.ndarray:
    xs = np.maximum(np.asarray(x, float) * c, 1e-6)
    return np.log(xs / 2.0) + _f(xs)


def sample_radii(rng: np.random.Generator, n: int, c: float = CONCENTRATION) -> np.ndarray:
    """n radii (units of R_max, in [0, 1]) drawn from the projected NFW truncated at R_max."""
    grid = np.linspace(1e-4, 1.0, 2001)
    cdf = _mass2d(grid, c) - _mass2d(grid[:1], c)
    return np.interp(rng.random(n) * cdf[-1], cdf, grid)


@lru_cache(maxsize=8)
def _filter_norm(c: float) -> float:
    x = np.linspace(0.0, 1.0, 4001)[1:]
    return float(np.trapezoid(sigma_nfw(np.maximum(x, CORE), c) * 2 * x, x))


def filter_weight(x: np.ndarray, c: float = CONCENTRATION) -> np.ndarray:
    """The finder's radial weight at ``x = R / R_ap``: NFW-shaped (flat inside CORE), 0 beyond 1, mean 1 over the disc.

    A uniform background of density rho therefore gives ``rho x area`` weighted counts.
    """
    x = np.asarray(x, float)
    w = sigma_nfw(np.clip(x, CORE, 1.0), c) / _filter_norm(c)
    return np.where(x <= 1.0, w, 0.0)


@lru_cache(maxsize=256)
def member_filter_mean(ratio: float, c: float = CONCENTRATION) -> float:
    """Mean filter weight of members spread as NFW within ``R_max = ratio x R_ap`` (all members counted)."""
    x = np.linspace(0.0, 1.0, 4001)[1:]
    dens = sigma_nfw(x, c) * 2 * x
    return float(np.trapezoid(dens * filter_weight(x * ratio, c), x) / np.trapezoid(dens, x))
