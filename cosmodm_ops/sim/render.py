"""Render point sources and galaxies into an image with numpy (vectorized stamps, one bincount).

Stars are circular Moffat profiles (beta 3 by default), evaluated exactly at pixel centres
and normalised analytically, so a stamp truncated far in the wings loses only the flux
below the stamp's threshold. Galaxies are exponential discs convolved with the PSF: the
exponential is a mixture of Gaussians (amplitudes fitted once by non-negative least
squares), the Moffat likewise, and the convolution of two Gaussians is a Gaussian, so a
galaxy stamp is a sum of elliptical Gaussians.

Objects are grouped by stamp radius (brighter -> larger), processed in chunks of
bounded memory, and every pixel contribution is added with one ``np.bincount`` per image.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy.optimize import nnls

__all__ = ["STAMP_RADII", "moffat_alpha", "render_sources"]

#: Stamp half-sizes (pixels) objects are grouped into.
STAMP_RADII = (4, 6, 9, 13, 19, 28, 40, 56, 80)
_CHUNK_PIXELS = 2_000_000


def moffat_alpha(fwhm: float, beta: float) -> float:
    """Moffat core width alpha for a FWHM (same units)."""
    return fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))


@lru_cache(maxsize=8)
def _mog_fit(kind: str, beta: float = 3.0, n: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Amplitudes and sigmas of a Gaussian mixture for a unit profile (radial NNLS fit).

    ``exp``: exponential disc of half-light radius 1; ``moffat``: Moffat of FWHM 1 with ``beta``.
    Amplitudes sum to 1 (fractions of the flux); the fit weights each annulus by its area.
    """
    r = np.linspace(0.0, 8.0, 1600)[1:]
    if kind == "exp":
        b = 1.678
        prof = b * b / (2 * math.pi) * np.exp(-b * r)
        sig = np.geomspace(0.08, 2.2, n)
    else:
        a = moffat_alpha(1.0, beta)
        prof = (beta - 1) / (math.pi * a * a) * (1 + (r / a) ** 2) ** (-beta)
        sig = np.geomspace(0.25, 1.6, n)
    basis = np.exp(-0.5 * (r[:, None] / sig[None, :]) ** 2) / (2 * math.pi * sig[None, :] ** 2)
    w = np.sqrt(r)
    amp, _ = nnls(basis * w[:, None], prof * w)
    keep = amp > 0.01 * amp.sum()
    amp, sig = amp[keep], sig[keep]
    return amp / amp.sum(), sig


def _radius_needed(flux: np.ndarray, peak_per_flux: np.ndarray, alpha: float, beta: float, thresh: float,
                   extra: np.ndarray) -> np.ndarray:
    """Radius where the profile drops below ``thresh`` (Moffat wing), plus an extent term (galaxies)."""
    ratio = np.maximum(flux * peak_per_flux / thresh, 1.0)
    r = alpha * np.sqrt(np.maximum(ratio ** (1.0 / beta) - 1.0, 0.0))
    return r + extra


def _chunks(n: int, k: int, m: int = 1):
    step = max(1, _CHUNK_PIXELS // (k * k * m))
    for s in range(0, n, step):
        yield slice(s, min(n, s + step))


def render_sources(
    shape: tuple[int, int],
    x: np.ndarray,
    y: np.ndarray,
    flux: np.ndarray,
    fwhm_px: float,
    beta: float = 3.0,
    r_half_px: np.ndarray | None = None,
    q: np.ndarray | None = None,
    pa_deg: np.ndarray | None = None,
    thresh: float = 1.0,
) -> np.ndarray:
    """An image (float32, ``shape``) with the given sources, in the flux units of ``flux``.

    Parameters
    ----------
    shape : (ny, nx)
    x, y : ndarray, shape (n,)
        0-based pixel positions (numpy ``image[y, x]``); sources off the image add their wings.
    flux : ndarray, shape (n,)
        Total flux of each source (electrons).
    fwhm_px : float
        PSF FWHM in pixels.
    beta : float
        Moffat beta.
    r_half_px, q, pa_deg : ndarray, optional
        Galaxy half-light radius (pixels, major axis; 0 = point source), axis ratio and position
        angle (degrees from +y through +x). Point sources where absent.
    thresh : float
        Stamps extend until the PSF wing falls below this (flux units per pixel).
    """
    ny, nx = shape
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    flux = np.asarray(flux, float)
    n = len(x)
    rh = np.zeros(n) if r_half_px is None else np.asarray(r_half_px, float)
    qq = np.ones(n) if q is None else np.asarray(q, float)
    pa = np.zeros(n) if pa_deg is None else np.asarray(pa_deg, float)
    alpha = moffat_alpha(fwhm_px, beta)
    peak = (beta - 1) / (math.pi * alpha * alpha)  # Moffat peak per unit flux
    need = _stamp_extent(flux, rh, qq, alpha, beta, peak, fwhm_px, thresh)
    rmax = STAMP_RADII[-1]
    inside = (x > -rmax) & (x < nx + rmax - 1) & (y > -rmax) & (y < ny + rmax - 1) & (flux > 0)
    # render into a padded image so that no stamp needs a bounds check; one bincount at the end
    pad = 2 * rmax + 2
    width = nx + 2 * pad
    idx_parts: list[np.ndarray] = []
    val_parts: list[np.ndarray] = []
    lower = -1.0
    for R in STAMP_RADII:
        upper = R if R != rmax else np.inf
        grp = inside & (need > lower) & (need <= upper)
        lower = R
        if not grp.any():
            continue
        sel = np.nonzero(grp)[0]
        gal = rh[sel] > 0
        for part, is_gal in ((sel[~gal], False), (sel[gal], True)):
            if part.size == 0:
                continue
            for ch in _chunks(part.size, 2 * R + 1, 12 if is_gal else 1):
                s = part[ch]
                ix = np.rint(x[s]).astype(np.int64)
                iy = np.rint(y[s]).astype(np.int64)
                off = np.arange(-R, R + 1)
                dx = (ix[:, None] - x[s][:, None] + off[None, :]).astype(np.float32)  # (m, k)
                dy = (iy[:, None] - y[s][:, None] + off[None, :]).astype(np.float32)
                if is_gal:
                    vals = _galaxy_stamps(dx, dy, flux[s], fwhm_px, beta, rh[s], qq[s], pa[s])
                else:
                    vals = _star_stamps(dx, dy, flux[s], alpha, beta, peak)
                idx_parts.append(_stamp_index(ix + pad, iy + pad, off, width))
                val_parts.append(vals.ravel())
    if not idx_parts:
        return np.zeros(shape, np.float32)
    img = np.bincount(np.concatenate(idx_parts), weights=np.concatenate(val_parts),
                      minlength=width * (ny + 2 * pad))
    img = img.reshape(ny + 2 * pad, width)[pad:pad + ny, pad:pad + nx]
    return img.astype(np.float32)


def _stamp_index(ix: np.ndarray, iy: np.ndarray, off: np.ndarray, width: int) -> np.ndarray:
    """Flat indices (int32, m x k x k, raveled) into an image of row length ``width`` of the stamps
    centred on pixels (ix, iy), shape (m,) each, with offsets ``off`` (k,)."""
    lin_off = (off[:, None] * width + off[None, :]).astype(np.int32)  # (k, k)
    base = (iy * width + ix).astype(np.int32)
    return (base[:, None, None] + lin_off[None, :, :]).ravel()


def _stamp_extent(flux: np.ndarray, rh: np.ndarray, q: np.ndarray, alpha: float, beta: float, peak: float,
                  fwhm_px: float, thresh: float) -> np.ndarray:
    """Stamp radius (pixels) each source needs: where its Moffat wing, or its exponential disc beyond the PSF
    core (galaxies, ``rh > 0``), falls below ``thresh``; shape (n,)."""
    need = _radius_needed(flux, np.full(len(flux), peak), alpha, beta, thresh, 0.0)
    gal = rh > 0
    if gal.any():
        # exponential: I(r) ~ F b^2 / (2 pi q rh^2) exp(-b r / rh) with b = 1.678; beyond the PSF core
        b = 1.678
        rg = rh[gal]
        ratio = np.maximum(flux[gal] * b * b / (2 * math.pi * q[gal] * rg * rg) / thresh, 1.0)
        need[gal] = np.maximum(need[gal], rg / b * np.log(ratio) + fwhm_px)
    return need


def _star_stamps(dx: np.ndarray, dy: np.ndarray, flux: np.ndarray, alpha: float, beta: float, peak: float
                 ) -> np.ndarray:
    """Moffat stamps of point sources at pixel offsets ``dx`` (m, k) and ``dy`` (m, k): shape (m, k, k),
    float32, flux units per pixel."""
    c = np.float32(1.0 / (alpha * alpha))
    dx2 = dx * dx * c
    u = (dy * dy * c + np.float32(1.0))[:, :, None] + dx2[:, None, :]
    if beta == 3.0:
        vals = u * u
        vals *= u
        np.reciprocal(vals, out=vals)
    else:
        vals = u ** np.float32(-beta)
    vals *= (flux * peak).astype(np.float32)[:, None, None]
    return vals


def _galaxy_stamps(dx: np.ndarray, dy: np.ndarray, flux: np.ndarray, fwhm_px: float, beta: float,
                   rh: np.ndarray, q: np.ndarray, pa_deg: np.ndarray) -> np.ndarray:
    """Exponential discs convolved with the Moffat PSF (mixtures of Gaussians), shape (m, k, k)."""
    ga, gs = _mog_fit("exp")
    pa_, ps = _mog_fit("moffat", beta)
    m, k = dx.shape
    th = np.radians(pa_deg)
    s, c = np.sin(th), np.cos(th)  # major axis direction (x, y) = (s, c): from +y through +x
    out = np.zeros((m, k, k), np.float32)
    X = dx[:, None, :]
    Y = dy[:, :, None]
    for a_g, s_g in zip(ga, gs):
        sa = s_g * rh  # major-axis sigma (pixels)
        sb = sa * q
        # covariance of the galaxy component: R diag(sa^2, sb^2) R^T with major axis (s, c)
        cxx0 = sa * sa * s * s + sb * sb * c * c
        cyy0 = sa * sa * c * c + sb * sb * s * s
        cxy = (sa * sa - sb * sb) * s * c
        for a_p, s_p in zip(pa_, ps):
            v = (s_p * fwhm_px) ** 2
            cxx, cyy = cxx0 + v, cyy0 + v
            det = cxx * cyy - cxy * cxy
            ixx = (cyy / det).astype(np.float32)[:, None, None]
            iyy = (cxx / det).astype(np.float32)[:, None, None]
            ixy = (-cxy / det).astype(np.float32)[:, None, None]
            norm = (a_g * a_p * flux / (2 * math.pi * np.sqrt(det))).astype(np.float32)[:, None, None]
            out += norm * np.exp(-0.5 * (ixx * X * X + 2 * ixy * X * Y + iyy * Y * Y))
    return out
