"""The coadd's QA figures (matplotlib, Agg): PSF-FWHM map, SPREAD_MODEL diagram, pseudo-colour image.

Each function draws from arrays and tables in memory and writes one PNG (returning its path);
the repeatability plot is :func:`cosmodm_ops.coadd.photcal.plot_repeatability`, the locus plot
:func:`cosmodm_ops.coadd.locus.plot_locus`, the completeness plot
:func:`cosmodm_ops.qa.completeness.plot_completeness`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from cosmodm_ops.coadd.tiling import Tile

__all__ = ["bin_image", "color_image", "plot_fwhm_map", "plot_spread_model"]


def plot_fwhm_map(samples: Sequence[Mapping[str, float]], tile: Tile, path: Path, target: float) -> Path:
    """PSF FWHM (arcsec) of the input images and of the homogenized ones, at their positions on the tile."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ra = np.array([s["ra"] for s in samples])
    dec = np.array([s["dec"] for s in samples])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8), sharex=True, sharey=True)
    try:
        dra = ((ra - tile.ra + 180.0) % 360.0 - 180.0) * math.cos(math.radians(tile.dec)) * 60.0
        ddec = (dec - tile.dec) * 60.0
        for ax, key, name in ((axes[0], "before", "input PSFs"), (axes[1], "after", "homogenized")):
            v = np.array([s[key] for s in samples])
            sc = ax.scatter(dra, ddec, c=v, s=25, cmap="viridis")
            fig.colorbar(sc, ax=ax, label="FWHM (arcsec)")
            spread = (v.max() - v.min()) / np.median(v) * 100 if len(v) else math.nan
            ax.set_title(f"{name}: median {np.median(v):.3f}\" (spread {spread:.1f}%)", fontsize=10)
            ax.set_xlabel("east offset (arcmin)")
            h = tile.size_deg * 30.0
            ax.set_xlim(h, -h)
            ax.set_ylim(-h, h)
            ax.set_aspect("equal")
        axes[0].set_ylabel("north offset (arcmin)")
        fig.suptitle(f"PSF FWHM over tile {tile.name}; target {target:.3f}\"", fontsize=10)
        fig.tight_layout()
        fig.savefig(path, dpi=90)
    finally:
        plt.close(fig)
    return path


def plot_spread_model(cat: np.ndarray, dzp: float, star_max: float, path: Path, title: str) -> Path:
    """SPREAD_MODEL against calibrated MAG_AUTO, with the star/galaxy cut."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = cat["MAG_AUTO"] < 90
    fig, ax = plt.subplots(figsize=(7, 4.5))
    try:
        ax.plot(cat["MAG_AUTO"][ok] + dzp, cat["SPREAD_MODEL"][ok], ".", ms=3, color="C0", rasterized=True)
        ax.axhspan(-star_max, star_max, color="C3", alpha=0.15, label=f"|SPREAD_MODEL| < {star_max:g}: stars")
        ax.set_ylim(-0.02, 0.06)
        ax.set_xlabel("MAG_AUTO (calibrated)")
        ax.set_ylabel("SPREAD_MODEL")
        ax.set_title(f"{title}: {int(ok.sum())} objects", fontsize=10)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=90)
    finally:
        plt.close(fig)
    return path


def bin_image(img: np.ndarray, max_side: int = 2000) -> np.ndarray:
    """Block-average ``img`` by the smallest integer factor that brings its longer side to ``max_side`` or less."""
    f = max(1, math.ceil(max(img.shape) / max_side))
    if f == 1:
        return img
    ny, nx = (img.shape[0] // f) * f, (img.shape[1] // f) * f
    return img[:ny, :nx].reshape(ny // f, f, nx // f, f).mean(axis=(1, 3))


def color_image(images: Mapping[str, np.ndarray], bands: Sequence[str], dzp: Mapping[str, float],
                path: Path) -> tuple[list[str], Path]:
    """A pseudo-colour PNG of calibrated fluxes: i, r, g as red, green, blue (else the bands reversed, repeated).

    Returns
    -------
    rgb : list of str
        The bands drawn as red, green and blue.
    path : Path
    """
    from cosmodm_ops.coadd.swarp import color_png

    rgb = [b for b in ("i", "r", "g") if b in images]
    if len(rgb) < 3:
        rgb = (list(reversed(bands)) * 3)[:3]
    flux = {b: bin_image(images[b] * 10 ** (-0.4 * dzp[b])) for b in set(rgb)}
    return rgb, color_png(flux[rgb[0]], flux[rgb[1]], flux[rgb[2]], path)
