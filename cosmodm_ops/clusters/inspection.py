"""The picture a person confirms a cluster on: the pseudo-colour cut-out with the members, and the curve.

:func:`member_pixels` (pure) puts the finder's members, the BCG and the candidate position on the
pixels of a tile's pseudo-colour image (a :func:`cosmodm_ops.qa.pseudocolour.lupton_rgb` array,
north up); :func:`inspection_png` draws the cut-out around the candidate with those overlaid and
the richness-vs-z curve beside it: the image the ``cluster_followup`` DAG's human-in-the-loop
step shows before it asks confirm / reject / unsure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Overlay", "inspection_png", "member_pixels"]


@dataclass
class Overlay:
    """Pixel positions (column, row of the north-up RGB array) of what is drawn on the cut-out."""

    members: np.ndarray
    """shape (n, 2)."""
    bcg: tuple[float, float] | None
    candidate: tuple[float, float]


def member_pixels(wcs: Any, ny: int, ra: Sequence[float], dec: Sequence[float], bcg: tuple[float, float] | None,
                  candidate: tuple[float, float]) -> Overlay:
    """The members' (``ra``, ``dec``, degrees), the BCG's and the candidate's pixels on the RGB array.

    ``wcs`` is the tile's (astropy WCS, FITS row 0 at the bottom); the RGB array of ``ny`` rows has
    row 0 at the top, so ``row = ny - 1 - y``. A BCG with a NaN position is None.
    """

    def to_px(r: np.ndarray, d: np.ndarray) -> np.ndarray:
        x, y = wcs.all_world2pix(np.asarray(r, float), np.asarray(d, float), 0)
        return np.column_stack([np.asarray(x, float), ny - 1 - np.asarray(y, float)])

    members = to_px(np.asarray(ra, float), np.asarray(dec, float)) if len(ra) else np.zeros((0, 2))
    b = None
    if bcg is not None and np.all(np.isfinite(bcg)):
        b = tuple(to_px(np.array([bcg[0]]), np.array([bcg[1]]))[0])
    c = tuple(to_px(np.array([candidate[0]]), np.array([candidate[1]]))[0])
    return Overlay(members, b, c)  # type: ignore[arg-type]


def inspection_png(rgb: np.ndarray, overlay: Overlay, result: Any, path: str | Path, *,
                   half_size_px: int = 400, title: str = "") -> Path:
    """The cut-out (``2 half_size_px`` square around the candidate) with the overlay, and the curve.

    ``result`` is the finder's :class:`~cosmodm_ops.clusters.finder.ClusterResult` (z grid,
    richness curve, z_phot, richness, significance).
    """
    from cosmodm_ops.clusters.plots import _pyplot

    plt = _pyplot()
    cx, cy = overlay.candidate
    x0, x1 = max(0, int(cx) - half_size_px), min(rgb.shape[1], int(cx) + half_size_px)
    y0, y1 = max(0, int(cy) - half_size_px), min(rgb.shape[0], int(cy) + half_size_px)
    fig, (ax_img, ax_curve) = plt.subplots(1, 2, figsize=(11, 5.2), gridspec_kw={"width_ratios": [1.1, 1]})
    ax_img.imshow(rgb[y0:y1, x0:x1], origin="upper", extent=(x0 - 0.5, x1 - 0.5, y1 - 0.5, y0 - 0.5))
    if len(overlay.members):
        ax_img.scatter(overlay.members[:, 0], overlay.members[:, 1], s=60, facecolors="none", edgecolors="yellow",
                       linewidths=0.8, label=f"members ({len(overlay.members)})")
    if overlay.bcg is not None:
        ax_img.scatter([overlay.bcg[0]], [overlay.bcg[1]], s=160, marker="s", facecolors="none", edgecolors="red",
                       linewidths=1.2, label="BCG")
    ax_img.scatter([cx], [cy], s=200, marker="+", color="cyan", label="candidate")
    ax_img.set_xlim(x0 - 0.5, x1 - 0.5)
    ax_img.set_ylim(y1 - 0.5, y0 - 0.5)
    ax_img.set_title(title or result.name)
    ax_img.legend(loc="lower right", fontsize=7)
    ax_img.set_xticks([])
    ax_img.set_yticks([])
    if len(result.z_grid):
        ax_curve.plot(result.z_grid, result.richness_curve, color="k")
    if np.isfinite(result.z_phot):
        ax_curve.axvline(result.z_phot, color="r", ls="--",
                         label=f"z_phot {result.z_phot:.3f}, richness {result.richness:.1f}, "
                               f"significance {result.significance:.1f}")
        ax_curve.legend(fontsize=8)
    ax_curve.set_xlabel("z")
    ax_curve.set_ylabel("richness (background subtracted)")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
