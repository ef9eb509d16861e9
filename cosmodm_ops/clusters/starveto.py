"""The stellar-locus colour veto of the finder's galaxy selection: is an object's colour that of a star?

SPREAD_MODEL separates galaxies from stars only where it can: at the image level (simulated PS1
coadds, 0.5" pixels, FWHM 1.1" in i) a compact galaxy at z >= 0.4 (half-light radius r_half below ~0.3
FWHM) has SPREAD_MODEL ~0.001-0.003, and below S/N ~12 in i SPREAD_MODEL of galaxies scatters
*negative* (median -0.01 at S/N 5-8) while that of stars scatters about 0. For those objects the
finder asks the colours instead (:func:`cosmodm_ops.clusters.finder.select_galaxies`): an object
whose (g-r, r-i, i-z) is consistent with the stellar locus within its errors is a star.

:func:`locus_chi2` is the distance of each object to the locus polyline (the Covey et al. 2007
median locus of :func:`cosmodm_ops.coadd.locus.read_covey_locus`, taken as PS1 colours: the same
locus the simulated stars are drawn from; a survey whose system differs by more than ~0.03 mag
should transform it first), in units of the colour errors: ``min over the locus of sum_c (colour_c
- locus_c)**2 / (err_a**2 + err_b**2 + width**2)`` over the colours whose two MAG_DETMODEL errors are
below ``max_err`` (``width``: the locus's own width, 0.05 mag). Red-sequence galaxies sit 0.28-0.46
mag off the locus (mostly in g-r) for z 0.4-0.7, 0.13 at z 0.3 and on it at z ~0.2 (where galaxies
are resolved and SPREAD_MODEL decides).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

__all__ = ["LOCUS_COLOURS", "chi2_quantile", "has_gr", "locus_chi2", "locus_curve"]

#: Colours the veto uses (y: the locus table has no PS1 y).
LOCUS_COLOURS = (("g", "r"), ("r", "i"), ("i", "z"))


@lru_cache(maxsize=2)
def locus_curve(step: float = 0.01) -> np.ndarray:
    """The stellar locus in (g-r, r-i, i-z), resampled every ``step`` mag of arc length; shape (m, 3)."""
    from cosmodm_ops.coadd.locus import read_covey_locus

    return read_covey_locus().curve(tuple(f"{a}-{b}" for a, b in LOCUS_COLOURS), step)


def locus_chi2(catalog: np.ndarray, width: float = 0.05, max_err: float = 0.3,
               curve: np.ndarray | None = None, chunk: int = 4000) -> tuple[np.ndarray, np.ndarray]:
    """Each row's chi2 distance to the stellar locus and the number of colours it used (see the module).

    ``catalog``: ``mag_detmodel_<b>`` and ``magerr_detmodel_<b>`` columns; a missing band's colours are
    not used. Rows with no usable colour get chi2 0 (nothing says they are not stars).
    """
    curve = locus_curve() if curve is None else curve
    names = catalog.dtype.names or ()
    n = len(catalog)
    diffs, ivars, use = [], [], []
    for k, (a, b) in enumerate(LOCUS_COLOURS):
        if f"mag_detmodel_{a}" not in names or f"mag_detmodel_{b}" not in names:
            continue
        ea, eb = (np.asarray(catalog[f"magerr_detmodel_{x}"], float) for x in (a, b))
        ok = (ea < max_err) & (eb < max_err)
        colour = np.asarray(catalog[f"mag_detmodel_{a}"], float) - np.asarray(catalog[f"mag_detmodel_{b}"], float)
        diffs.append((np.where(ok, colour, 0.0), k))
        ivars.append(np.where(ok, 1.0 / (ea**2 + eb**2 + width**2), 0.0))
        use.append(ok)
    ncol = np.sum(use, axis=0).astype(int) if use else np.zeros(n, int)
    chi2 = np.zeros(n)
    if not diffs:
        return chi2, ncol
    for s in range(0, n, chunk):
        tot = np.zeros((min(chunk, n - s), len(curve)))
        for (colour, k), ivar in zip(diffs, ivars, strict=True):
            tot += (colour[s : s + chunk, None] - curve[None, :, k]) ** 2 * ivar[s : s + chunk, None]
        chi2[s : s + chunk] = tot.min(axis=1)
    return chi2, ncol


#: chi2 quantile 0.99 for 1-3 degrees of freedom (scipy.stats.chi2.ppf(0.99, n)).
_CHI2_99 = {0: 0.0, 1: 6.634896601021213, 2: 9.21034037197618, 3: 11.344866730144373}


def chi2_quantile(ncol: np.ndarray) -> np.ndarray:
    """The 99% chi2 quantile for each row's number of colours (a star is beyond it 1% of the time or less:
    the distance is minimised along the locus, one degree of freedom fewer than the colours)."""
    return np.vectorize(_CHI2_99.__getitem__, otypes=[float])(np.asarray(ncol, int))


def has_gr(catalog: np.ndarray, max_err: float = 0.3) -> np.ndarray:
    """Rows whose g-r the veto can use (both MAGERR_DETMODEL below ``max_err``; False without a g or r band)."""
    names = catalog.dtype.names or ()
    if "magerr_detmodel_g" not in names or "magerr_detmodel_r" not in names:
        return np.zeros(len(catalog), bool)
    return (np.asarray(catalog["magerr_detmodel_g"]) < max_err) & (np.asarray(catalog["magerr_detmodel_r"]) < max_err)
