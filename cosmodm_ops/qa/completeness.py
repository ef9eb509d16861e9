"""Catalogue completeness and purity against a truth catalogue, by magnitude (pure functions).

A detected catalogue (positions, measured magnitudes, optionally SPREAD_MODEL) is matched
one-to-one to a truth catalogue (positions, true magnitudes, star flags) within a radius:
every pair closer than the radius is a candidate and pairs are taken nearest first, so each
truth object and each detection is used at most once. Then, per magnitude bin:

- **completeness** = matched truth objects / truth objects, binned by TRUE magnitude;
- **purity** = matched detections / detections, binned by MEASURED magnitude;
- with SPREAD_MODEL and star flags, among matched pairs (a detection is called a star when
  ``|SPREAD_MODEL| < star_max``): star (galaxy) **classification completeness** = true stars
  (galaxies) called stars (galaxies) / matched true stars (galaxies), by true magnitude;
  star (galaxy) **classification purity** = called stars (galaxies) that are true stars
  (galaxies) / matched detections called stars (galaxies), by measured magnitude.

The magnitudes where completeness falls to 90% and 50% are interpolated linearly between bin
centres at the last downward crossing (beyond it, completeness stays below the level). Nothing here reads files: :func:`read_truth`
is the one reader, for the simulator's ``truth/objects.fits``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cosmodm_ops.sky import chord, unit_vectors

__all__ = [
    "CompletenessResult",
    "TruthCatalog",
    "completeness_purity",
    "crossing_magnitude",
    "match_one_to_one",
    "plot_completeness",
    "read_truth",
]


def match_one_to_one(ra1: np.ndarray, dec1: np.ndarray, ra2: np.ndarray, dec2: np.ndarray,
                     radius_arcsec: float, *, k: int = 8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-to-one nearest matches between two position lists (degrees) within a radius.

    Candidate pairs are the ``k`` nearest of list 2 to each object of list 1 within the radius;
    they are accepted nearest first, each object of either list at most once.

    Returns
    -------
    i1, i2 : ndarray of int, shape (m,)
        Indices of matched objects in list 1 and list 2.
    sep_arcsec : ndarray, shape (m,)
    """
    from scipy.spatial import cKDTree

    empty = (np.zeros(0, int), np.zeros(0, int), np.zeros(0))
    if len(ra1) == 0 or len(ra2) == 0:
        return empty
    tree = cKDTree(unit_vectors(ra2, dec2))
    kk = min(k, len(ra2))
    dist, idx = tree.query(unit_vectors(ra1, dec1), k=kk, distance_upper_bound=chord(radius_arcsec))
    dist, idx = dist.reshape(len(ra1), kk), idx.reshape(len(ra1), kk)
    ok = np.isfinite(dist)
    if not ok.any():
        return empty
    c1 = np.broadcast_to(np.arange(len(ra1))[:, None], dist.shape)[ok]
    c2, cd = idx[ok], dist[ok]
    order = np.argsort(cd, kind="stable")
    used1 = np.zeros(len(ra1), bool)
    used2 = np.zeros(len(ra2), bool)
    keep = []
    for j in order:
        a, b = c1[j], c2[j]
        if not used1[a] and not used2[b]:
            used1[a] = used2[b] = True
            keep.append(j)
    keep_a = np.asarray(keep, int)
    sep = np.degrees(2.0 * np.arcsin(cd[keep_a] / 2.0)) * 3600.0
    return c1[keep_a].astype(int), c2[keep_a].astype(int), sep


def crossing_magnitude(centres: np.ndarray, values: np.ndarray, level: float) -> float | None:
    """Magnitude beyond which ``values`` (e.g. completeness) stay below ``level``.

    Linear interpolation between the last bin centre at or above the level and the next
    non-empty bin (the last downward crossing, so a dip of a sparse bright bin does not
    count). None when no bin is at or above the level, or the faintest one still is.
    """
    c = np.asarray(centres, float)
    v = np.asarray(values, float)
    ok = np.isfinite(v)
    c, v = c[ok], v[ok]
    above = np.nonzero(v >= level)[0]
    if len(above) == 0 or above[-1] == len(v) - 1:
        return None
    j = int(above[-1])
    c0, c1, v0, v1 = c[j], c[j + 1], v[j], v[j + 1]
    return float(c0 + (v0 - level) / (v0 - v1) * (c1 - c0))


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.maximum(den, 1), np.nan)


def _hist(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    v = np.asarray(values, float)
    return np.histogram(v[np.isfinite(v)], bins=edges)[0]


@dataclass(frozen=True)
class CompletenessResult:
    """Completeness and purity by magnitude bin. Arrays have shape (nbins,), ``edges`` (nbins + 1,).

    Attributes
    ----------
    edges : ndarray
        Bin edges (mag).
    n_true, n_true_matched : ndarray of int
        Truth objects per TRUE-magnitude bin, and those matched.
    n_detected, n_detected_matched : ndarray of int
        Detections per MEASURED-magnitude bin (after ``mag_offset``), and those matched.
    completeness, purity : ndarray
        ``n_true_matched / n_true`` and ``n_detected_matched / n_detected`` (NaN for empty bins).
    classification : dict or None
        ``star_completeness``, ``galaxy_completeness`` (by true mag), ``star_purity``,
        ``galaxy_purity`` (by measured mag), each an array; None without SPREAD_MODEL or star flags.
    mag90, mag50 : float or None
        Where completeness falls to 90% and 50% (:func:`crossing_magnitude`).
    n_matched : int
    n_unmeasured : int
        Detections without a valid measured magnitude (in no purity bin).
    mag_offset : float
        Added to the measured magnitudes before binning (0 unless ``align_mags``).
    radius_arcsec : float
    median_sep_arcsec : float or None
    """

    edges: np.ndarray
    n_true: np.ndarray
    n_true_matched: np.ndarray
    n_detected: np.ndarray
    n_detected_matched: np.ndarray
    completeness: np.ndarray
    purity: np.ndarray
    classification: dict[str, np.ndarray] | None
    mag90: float | None
    mag50: float | None
    n_matched: int
    n_unmeasured: int
    mag_offset: float
    radius_arcsec: float
    median_sep_arcsec: float | None

    @property
    def centres(self) -> np.ndarray:
        return 0.5 * (self.edges[1:] + self.edges[:-1])

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (NaN -> None)."""

        def lst(a: np.ndarray) -> list[Any]:
            return [None if isinstance(x, float) and not math.isfinite(x) else x for x in np.asarray(a).tolist()]

        return {
            "mag_lo": lst(self.edges[:-1]), "mag_hi": lst(self.edges[1:]),
            "n_true": lst(self.n_true), "n_true_matched": lst(self.n_true_matched),
            "n_detected": lst(self.n_detected), "n_detected_matched": lst(self.n_detected_matched),
            "completeness": lst(self.completeness), "purity": lst(self.purity),
            "classification": None if self.classification is None else
            {k: lst(v) for k, v in self.classification.items()},
            "mag90": self.mag90, "mag50": self.mag50, "n_matched": self.n_matched,
            "n_unmeasured": self.n_unmeasured, "mag_offset": self.mag_offset,
            "radius_arcsec": self.radius_arcsec, "median_sep_arcsec": self.median_sep_arcsec,
        }


def completeness_purity(
    det_ra: np.ndarray,
    det_dec: np.ndarray,
    det_mag: np.ndarray,
    true_ra: np.ndarray,
    true_dec: np.ndarray,
    true_mag: np.ndarray,
    *,
    edges: np.ndarray,
    radius_arcsec: float = 1.0,
    true_is_star: np.ndarray | None = None,
    spread_model: np.ndarray | None = None,
    star_max: float = 0.003,
    align_mags: bool = False,
) -> CompletenessResult:
    """Completeness and purity of a detected catalogue against truth, by magnitude.

    Parameters
    ----------
    det_ra, det_dec, det_mag : ndarray, shape (n_det,)
        Detections (degrees; measured magnitude, NaN or >= 90 where not measured).
    true_ra, true_dec, true_mag : ndarray, shape (n_true,)
        Truth in the detected footprint (degrees; true magnitude in the same band).
    edges : ndarray, shape (nbins + 1,)
        Magnitude bin edges, increasing.
    radius_arcsec : float
        Match radius.
    true_is_star : ndarray of bool, optional
    spread_model : ndarray, shape (n_det,), optional
        With ``true_is_star``, gives the classification metrics.
    star_max : float
        ``|SPREAD_MODEL| < star_max``: called a star.
    align_mags : bool
        Put the measured magnitudes on the truth scale first: add the median of
        ``true - measured`` over matched pairs (for catalogues on a relative zeropoint).

    Returns
    -------
    CompletenessResult
    """
    det_ra, det_dec, dmag, true_ra, true_dec, tmag, edges = _checked_inputs(
        det_ra, det_dec, det_mag, true_ra, true_dec, true_mag, edges)
    i_det, i_true, sep = match_one_to_one(det_ra, det_dec, true_ra, true_dec, radius_arcsec)
    offset = 0.0
    if align_mags and len(i_det):
        diff = tmag[i_true] - dmag[i_det]
        diff = diff[np.isfinite(diff)]
        if len(diff):
            offset = float(np.median(diff))
    dmag = dmag + offset
    true_matched = np.zeros(len(tmag), bool)
    true_matched[i_true] = True
    det_matched = np.zeros(len(dmag), bool)
    det_matched[i_det] = True
    n_true = _hist(tmag, edges)
    n_true_m = _hist(tmag[true_matched], edges)
    n_det = _hist(dmag, edges)
    n_det_m = _hist(dmag[det_matched], edges)
    completeness = _ratio(n_true_m, n_true)
    centres = 0.5 * (edges[1:] + edges[:-1])
    classification = None
    if spread_model is not None and true_is_star is not None:
        classification = _classification(tmag[i_true], dmag[i_det], np.asarray(true_is_star, bool)[i_true],
                                         np.abs(np.asarray(spread_model, float)[i_det]) < star_max, edges)
    return CompletenessResult(
        edges=edges, n_true=n_true, n_true_matched=n_true_m, n_detected=n_det, n_detected_matched=n_det_m,
        completeness=completeness, purity=_ratio(n_det_m, n_det), classification=classification,
        mag90=crossing_magnitude(centres, completeness, 0.9), mag50=crossing_magnitude(centres, completeness, 0.5),
        n_matched=len(i_det), n_unmeasured=int(np.sum(~np.isfinite(dmag))), mag_offset=offset,
        radius_arcsec=float(radius_arcsec), median_sep_arcsec=float(np.median(sep)) if len(sep) else None,
    )


def _checked_inputs(det_ra: Any, det_dec: Any, det_mag: Any, true_ra: Any, true_dec: Any, true_mag: Any,
                    edges: Any) -> tuple[np.ndarray, ...]:
    """The inputs of :func:`completeness_purity` as float arrays (a new ``det_mag``, NaN where not measured);
    ValueError on bad edges or mismatched lengths."""
    det_ra, det_dec = np.asarray(det_ra, float), np.asarray(det_dec, float)
    true_ra, true_dec = np.asarray(true_ra, float), np.asarray(true_dec, float)
    dmag = np.asarray(det_mag, float).copy()
    dmag[~np.isfinite(dmag) | (dmag >= 90)] = np.nan
    tmag = np.asarray(true_mag, float)
    edges = np.asarray(edges, float)
    if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) <= 0):
        msg = f"edges must be at least two increasing magnitudes, got {edges!r}"
        raise ValueError(msg)
    for name, a, ref in (("det_dec", det_dec, det_ra), ("det_mag", dmag, det_ra), ("true_dec", true_dec, true_ra),
                         ("true_mag", tmag, true_ra)):
        if len(a) != len(ref):
            msg = f"{name} has {len(a)} rows, its catalogue {len(ref)}"
            raise ValueError(msg)
    return det_ra, det_dec, dmag, true_ra, true_dec, tmag, edges


def _classification(tm: np.ndarray, dm: np.ndarray, is_star: np.ndarray, called_star: np.ndarray,
                    edges: np.ndarray) -> dict[str, np.ndarray]:
    """Star/galaxy completeness (by true magnitude ``tm``) and purity (by measured ``dm``) of matched pairs."""
    return {
        "star_completeness": _ratio(_hist(tm[is_star & called_star], edges), _hist(tm[is_star], edges)),
        "galaxy_completeness": _ratio(_hist(tm[~is_star & ~called_star], edges), _hist(tm[~is_star], edges)),
        "star_purity": _ratio(_hist(dm[is_star & called_star], edges), _hist(dm[called_star], edges)),
        "galaxy_purity": _ratio(_hist(dm[~is_star & ~called_star], edges), _hist(dm[~called_star], edges)),
    }


@dataclass(frozen=True)
class TruthCatalog:
    """Truth objects: positions (degrees), magnitudes per band, star flags. Arrays of shape (n,)."""

    ra: np.ndarray
    dec: np.ndarray
    mags: dict[str, np.ndarray]
    is_star: np.ndarray | None
    path: str = ""

    def __len__(self) -> int:
        return len(self.ra)

    def subset(self, sel: np.ndarray) -> TruthCatalog:
        return TruthCatalog(self.ra[sel], self.dec[sel], {b: m[sel] for b, m in self.mags.items()},
                            None if self.is_star is None else self.is_star[sel], self.path)


def read_truth(path: str | Path) -> TruthCatalog:
    """A truth catalogue: the simulator's ``truth/objects.fits`` (HDU 1: ``ra``, ``dec``, ``mag_<band>``, ``is_star``).

    Column names are matched case-insensitively; ``is_star`` is optional. Raises ValueError
    naming the file, HDU and column when the table cannot be used.
    """
    import fitsio

    try:
        data = fitsio.read(str(path), ext=1)
    except (OSError, ValueError) as err:
        msg = f"{path} HDU 1: cannot read the truth catalogue ({err}); expected a FITS table with ra, dec, mag_<band>"
        raise ValueError(msg) from err
    names = {n.lower(): n for n in (data.dtype.names or ())}
    missing = [c for c in ("ra", "dec") if c not in names]
    if missing:
        msg = f"{path} HDU 1: no column(s) {missing} (have {sorted(names)}); a truth catalogue needs ra, dec, mag_<band>"
        raise ValueError(msg)
    mags = {low[4:]: np.asarray(data[col], float) for low, col in names.items() if low.startswith("mag_")}
    if not mags:
        msg = f"{path} HDU 1: no mag_<band> column (have {sorted(names)})"
        raise ValueError(msg)
    for m in mags.values():
        m[~np.isfinite(m) | (m >= 90) | (m <= 0)] = np.nan
    star = np.asarray(data[names["is_star"]], bool) if "is_star" in names else None
    return TruthCatalog(np.asarray(data[names["ra"]], float), np.asarray(data[names["dec"]], float), mags, star,
                        str(path))


def plot_completeness(results: Mapping[str, CompletenessResult], path: str | Path, title: str = "") -> Path:
    """Completeness (solid) and purity (dashed) against magnitude, one colour per band; 50% and 90% marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    try:
        for k, (band, res) in enumerate(results.items()):
            colour = f"C{k}"
            label = f"{band}: completeness" + (f" (50% at {res.mag50:.2f})" if res.mag50 is not None else "")
            ax.plot(res.centres, res.completeness, "-o", ms=3, color=colour, label=label)
            ax.plot(res.centres, res.purity, "--", color=colour, label=f"{band}: purity")
            for m in (res.mag90, res.mag50):
                if m is not None:
                    ax.axvline(m, color=colour, lw=0.6, alpha=0.5)
        for level in (0.5, 0.9):
            ax.axhline(level, color="0.6", lw=0.6, ls=":")
        ax.set_ylim(-0.02, 1.05)
        ax.set_xlabel("magnitude (completeness: true; purity: measured)")
        ax.set_ylabel("fraction")
        ax.set_title(title or "Completeness and purity against truth", fontsize=10)
        ax.legend(fontsize=7, loc="lower left")
        fig.tight_layout()
        fig.savefig(path, dpi=90)
    finally:
        plt.close(fig)
    return path
