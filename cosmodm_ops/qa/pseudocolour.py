"""Pseudo-colour images of a tile: the Lupton et al. (2004) asinh RGB of three band coadds.

:func:`lupton_rgb` (pure, arrays in, uint8 RGB out) and :func:`write_pseudocolour` (the PNG and
its ``pseudocolour`` product). ``coadd calibrate`` makes one per tile from the non-homogenized
coadds (sharper than the homogenized ones) when the band jobs left them, else from the
homogenized ones; the cluster follow-up's inspection step overlays the members on it.

Lupton et al. 2004 (PASP 116, 133): with ``I = (r + g + b) / 3`` (sky subtracted), every
channel is scaled by ``asinh(Q I / stretch) / (Q I)``, so colours are kept where the intensity
saturates (a bright star stays coloured instead of turning white); channels above 1 are
scaled down together (the hue is kept) and clipped at 0.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cosmodm_ops.manifest import ManifestProduct

__all__ = ["lupton_rgb", "pick_bands", "write_pseudocolour"]

#: The bands drawn as red, green and blue, in order of preference.
PREFERRED = (("i", "r", "g"), ("z", "i", "r"), ("z", "r", "g"), ("y", "i", "r"))


def pick_bands(bands: Sequence[str]) -> list[str] | None:
    """Three bands as red, green, blue: i, r, g when present (else the first of :data:`PREFERRED`); None with fewer."""
    have = set(bands)
    for rgb in PREFERRED:
        if have >= set(rgb):
            return list(rgb)
    if len(have) < 3:
        return None
    return sorted(have, key=list("ugrizyY").index if have <= set("ugrizyY") else str)[::-1][:3]


def _robust_sigma(a: np.ndarray) -> float:
    v = a[np.isfinite(a)].ravel()[::7]
    if v.size == 0:
        return 0.0
    return float(1.4826 * np.median(np.abs(v - np.median(v))))


def lupton_rgb(red: np.ndarray, green: np.ndarray, blue: np.ndarray, *, q: float = 8.0,
               stretch: float | None = None, minimum: Sequence[float] | None = None) -> np.ndarray:
    """The asinh RGB image (uint8, shape (ny, nx, 3), row 0 at the top: north up for a north-up tile).

    Parameters
    ----------
    red, green, blue : ndarray, shape (ny, nx)
        Fluxes on one zeropoint (NaN: no data, black).
    q : float
        Lupton's softening Q (0: linear).
    stretch : float, optional
        The linear range; default 5 times the robust sky noise of the mean image.
    minimum : three floats, optional
        Sky level subtracted from each channel; default each channel's median.
    """
    chans = [np.asarray(a, np.float64) for a in (red, green, blue)]
    if len({c.shape for c in chans}) != 1 or chans[0].ndim != 2:
        msg = f"pseudo-colour: red, green, blue must be 2-d arrays of one shape, got {[c.shape for c in chans]}"
        raise ValueError(msg)
    nodata = ~np.all([np.isfinite(c) for c in chans], axis=0)
    mins = list(minimum) if minimum is not None else [float(np.nanmedian(c)) if np.isfinite(c).any() else 0.0
                                                      for c in chans]
    chans = [np.where(nodata, 0.0, c - m) for c, m in zip(chans, mins, strict=True)]
    mean = (chans[0] + chans[1] + chans[2]) / 3.0
    if stretch is None:
        stretch = 5.0 * _robust_sigma(np.where(nodata, np.nan, mean))
    stretch = max(float(stretch), 1e-12)
    with np.errstate(divide="ignore", invalid="ignore"):
        if q > 0:
            scale = np.where(mean > 0, np.arcsinh(q * mean / stretch) / (q * mean), 0.0)
        else:
            scale = np.where(mean > 0, 1.0 / stretch, 0.0)
    rgb = np.stack([np.clip(c * scale, 0.0, None) for c in chans], axis=-1)
    peak = rgb.max(axis=-1, keepdims=True)
    rgb = np.where(peak > 1.0, rgb / np.maximum(peak, 1e-300), rgb)
    rgb[nodata] = 0.0
    return np.flipud((rgb * 255.0 + 0.5).astype(np.uint8))


def write_pseudocolour(images: Mapping[str, np.ndarray], rgb_bands: Sequence[str], zeropoints: Mapping[str, float],
                       path: str | os.PathLike[str], outdir: str | os.PathLike[str], tags: Mapping[str, Any], *,
                       q: float = 8.0) -> ManifestProduct:
    """Write the PNG of ``images`` (red, green, blue = ``rgb_bands``) and return its ``pseudocolour`` product.

    Each band is put on zeropoint 30 (``10**(-0.4 (zp - 30))``) before the stretch, so the colours
    are those of the calibrated fluxes. ``tags`` are the tile's (survey, version, tile...): kind
    becomes ``pseudocolour`` and band the joined bands (``gri`` for red i, green r, blue g).
    """
    from matplotlib.image import imsave

    from cosmodm_ops.fits import file_sha256

    r, g, b = (np.asarray(images[x], np.float64) * 10 ** (-0.4 * (zeropoints[x] - 30.0)) for x in rgb_bands)
    path, outdir = Path(path), Path(outdir)
    tmp = path.with_name(f".{path.name}.part")
    imsave(tmp, lupton_rgb(r, g, b, q=q), format="png")
    os.replace(tmp, path)
    band = "".join(reversed(list(rgb_bands)))
    return ManifestProduct(kind="pseudocolour", tags={**tags, "kind": "pseudocolour", "band": band},
                           path=str(path.relative_to(outdir)), sha256=file_sha256(path), size=path.stat().st_size)
