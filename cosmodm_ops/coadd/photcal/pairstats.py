"""Relative calibration, quality: the repeatability of calibrated star magnitudes from pairs of measurements.

:func:`repeatability` (pure) gives, per magnitude bin, the total, statistical and systematic
RMS per measurement (mmag) and the bright-star figure the QA gate judges;
:func:`plot_repeatability` draws it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cosmodm_ops.coadd.photcal.matching import Detections, star_groups

__all__ = ["Repeatability", "plot_repeatability", "repeatability"]


@dataclass(frozen=True)
class Repeatability:
    """Repeatability of calibrated star magnitudes from pairs of measurements of the same star.

    Per bin of pair-mean magnitude: ``total`` = sqrt(mean(dm^2)/2), the per-measurement
    RMS; ``stat`` = sqrt(mean(err1^2 + err2^2)/2), what ``magerr`` alone predicts;
    ``sys`` = sqrt(max(0, total^2 - stat^2)). All in mmag. Pairs with |dm| above the
    outlier cut (mismatches) are left out of the statistics but kept in ``pair_*``.

    Attributes
    ----------
    bin_edges : ndarray, shape (n_bins + 1,)
    mag, n_pairs, total_mmag, stat_mmag, sys_mmag : ndarray, shape (n_bins,)
    bright_mmag : float
        ``total`` over the bright pairs (both errors <= ``bright_magerr``).
    bright_sys_mmag : float
    n_bright_pairs : int
    pair_mag, pair_dmag, pair_err : ndarray, shape (n_pairs,)
        Every pair: mean magnitude, difference (mag) and sqrt(err1^2 + err2^2).
    """

    bin_edges: np.ndarray
    mag: np.ndarray
    n_pairs: np.ndarray
    total_mmag: np.ndarray
    stat_mmag: np.ndarray
    sys_mmag: np.ndarray
    bright_mmag: float
    bright_sys_mmag: float
    n_bright_pairs: int
    pair_mag: np.ndarray
    pair_dmag: np.ndarray
    pair_err: np.ndarray


def _pairs(star: np.ndarray, n_stars: int) -> tuple[np.ndarray, np.ndarray]:
    a_parts, b_parts = [], []
    for _sel, grp in star_groups(star, n_stars):
        iu, ju = np.triu_indices(grp.shape[1], 1)
        a_parts.append(grp[:, iu].ravel())
        b_parts.append(grp[:, ju].ravel())
    if not a_parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(a_parts), np.concatenate(b_parts)


def repeatability(
    det: Detections,
    zp: np.ndarray,
    *,
    bin_width: float = 0.5,
    bright_magerr: float = 0.01,
    outlier_mag: float = 0.3,
) -> Repeatability:
    """Pair statistics of the calibrated magnitudes ``mag + zp[image]`` (images with NaN zp are left out).

    Parameters
    ----------
    det : Detections
    zp : ndarray, shape (n_images,)
    bin_width : float
        Magnitude bin width (mag).
    bright_magerr : float
        A pair is bright if both errors are at most this (mag; 0.01 is S/N ~ 100).
    outlier_mag : float
        Pairs differing by more are treated as mismatches (mag).
    """
    good = np.isfinite(zp[det.image]) & np.isfinite(det.mag)
    idx = np.flatnonzero(good)
    m = det.mag[idx] + zp[det.image[idx]]
    e = det.magerr[idx]
    counts = np.bincount(det.star[idx], minlength=det.n_stars)
    remap = np.cumsum(counts >= 2) - 1
    keep = counts[det.star[idx]] >= 2
    m, e = m[keep], e[keep]
    a, b = _pairs(remap[det.star[idx][keep]], int((counts >= 2).sum()))
    pm = 0.5 * (m[a] + m[b])
    dm = m[a] - m[b]
    pe = np.sqrt(e[a] ** 2 + e[b] ** 2)
    ok = np.abs(dm) <= outlier_mag
    if len(pm):
        lo = math.floor(pm.min() / bin_width) * bin_width
        hi = math.ceil(pm.max() / bin_width + 1e-9) * bin_width
        edges = np.arange(lo, hi + bin_width / 2, bin_width)
    else:
        edges = np.array([0.0, bin_width])
    nb = len(edges) - 1
    which = np.clip(np.digitize(pm, edges) - 1, 0, nb - 1)
    n = np.bincount(which[ok], minlength=nb)
    s2 = np.bincount(which[ok], dm[ok] ** 2, minlength=nb)
    e2 = np.bincount(which[ok], pe[ok] ** 2, minlength=nb)
    with np.errstate(invalid="ignore", divide="ignore"):
        total = np.sqrt(s2 / n / 2.0) * 1000.0
        stat = np.sqrt(e2 / n / 2.0) * 1000.0
        sys = np.sqrt(np.clip(s2 - e2, 0.0, None) / n / 2.0) * 1000.0
    bright = ok & (np.maximum(e[a], e[b]) <= bright_magerr)
    nbright = int(bright.sum())
    if nbright:
        bt = math.sqrt(np.mean(dm[bright] ** 2) / 2.0) * 1000.0
        bs = math.sqrt(max(0.0, np.mean(dm[bright] ** 2) - np.mean(pe[bright] ** 2)) / 2.0) * 1000.0
    else:
        bt = bs = float("nan")
    return Repeatability(
        bin_edges=edges,
        mag=0.5 * (edges[1:] + edges[:-1]),
        n_pairs=n,
        total_mmag=total,
        stat_mmag=stat,
        sys_mmag=sys,
        bright_mmag=bt,
        bright_sys_mmag=bs,
        n_bright_pairs=nbright,
        pair_mag=pm,
        pair_dmag=dm,
        pair_err=pe,
    )


def plot_repeatability(
    rep: Repeatability, path: str | Path, threshold_mmag: float | None = None, title: str = ""
) -> Path:
    """Write the repeatability plot (PNG): pair differences and their RMS against magnitude.

    Top: every pair's magnitude difference / sqrt(2) (mmag) against its mean magnitude.
    Bottom: per bin the total, statistical and systematic RMS (mmag), and the threshold.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    path = Path(path)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(7, 7), sharex=True)
    try:
        ax1.plot(
            rep.pair_mag, rep.pair_dmag / math.sqrt(2) * 1000.0, ",", color="0.3", alpha=0.5, rasterized=True
        )
        ax1.set_ylabel(r"$\Delta m/\sqrt{2}$ (mmag)")
        ax1.set_ylim(-150, 150)
        ax1.axhline(0, color="k", lw=0.5)
        ax1.set_title(title or f"{len(rep.pair_mag)} star pairs")
        good = rep.n_pairs > 0
        ax2.plot(rep.mag[good], rep.total_mmag[good], "o-", label="total")
        ax2.plot(rep.mag[good], rep.sys_mmag[good], "s-", label="systematic")
        ax2.plot(rep.mag[good], rep.stat_mmag[good], "--", color="0.5", label="expected from errors")
        if threshold_mmag is not None:
            ax2.axhline(threshold_mmag, color="r", ls=":", label=f"threshold {threshold_mmag:g} mmag")
        ax2.set_yscale("log")
        ax2.yaxis.set_major_locator(matplotlib.ticker.FixedLocator([0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500]))
        ax2.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax2.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax2.set_xlabel("mean calibrated magnitude (mag)")
        ax2.set_ylabel("RMS per measurement (mmag)")
        ax2.legend(fontsize=8)
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
    return path
