"""Stage ``completeness`` (simulations only): each band's catalog scored against the simulator's truth catalogue.

Truth objects count where every detection band has data (:func:`covered`); per band,
completeness and purity by magnitude, the 90% and 50% completeness magnitudes and the
SPREAD_MODEL classification come from :func:`cosmodm_ops.qa.completeness.completeness_purity`.

:func:`run` is pure (a :class:`~cosmodm_ops.qa.completeness.TruthCatalog` in memory);
:func:`score_against_truth` reads the truth file first.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cosmodm_ops.coadd.inputs import CoaddBadInput
from cosmodm_ops.coadd.tiling import Tile

__all__ = ["COVERAGE_WEIGHT_FRACTION", "covered", "magnitude_bins", "run", "score_against_truth"]

log = logging.getLogger(__name__)

#: Truth objects are scored where every detection band's coadd weight is at least this fraction of its median.
COVERAGE_WEIGHT_FRACTION = 0.1


def covered(weights: Sequence[np.ndarray], fraction: float = COVERAGE_WEIGHT_FRACTION) -> np.ndarray:
    """Pixels with data in every band: weight >= ``fraction`` x the median positive weight.

    SWarp's resampling leaves weights of 1e-6 to 1e-3 of the median beyond the inputs' edges
    (30% of the weight > 0 pixels of a simulated demo tile): no object is found there, so a
    truth object there is not counted as missed.
    """
    out = np.ones(weights[0].shape, bool)
    for w in weights:
        pos = w[w > 0]
        out &= (w >= fraction * float(np.median(pos))) if pos.size else False
    return out


def magnitude_bins(mags: np.ndarray, bin_mag: float) -> np.ndarray:
    """Edges of bins ``bin_mag`` wide, on multiples of ``bin_mag``, that span the finite ``mags``."""
    lo = math.floor(float(mags.min()) / bin_mag) * bin_mag
    nbins = max(1, math.ceil((float(mags.max()) - lo) / bin_mag + 1e-9))
    return lo + bin_mag * np.arange(nbins + 1)


def _inside(truth: Any, tile: Tile, footprint: np.ndarray) -> Any:
    """The truth objects whose pixel on the tile grid is in ``footprint``."""
    x, y = tile.wcs().all_world2pix(truth.ra, truth.dec, 0)
    xi = np.round(np.nan_to_num(x, nan=-1.0)).astype(int)
    yi = np.round(np.nan_to_num(y, nan=-1.0)).astype(int)
    ny, nx = footprint.shape
    inside = (xi >= 0) & (xi < nx) & (yi >= 0) & (yi < ny)
    inside[inside] = footprint[yi[inside], xi[inside]]
    return truth.subset(inside)


def run(
    truth: Any,
    tile: Tile,
    footprint: np.ndarray,
    cats: Mapping[str, np.ndarray],
    dzp: Mapping[str, float],
    *,
    absolute: bool,
    radius_arcsec: float,
    bin_mag: float,
    star_max: float,
    source: str = "truth",
) -> tuple[dict[str, Any], dict[str, str]]:
    """Each band's dual-image catalog against a truth catalogue, by magnitude.

    Truth objects count where ``footprint`` (on the tile grid, :func:`covered`) is true at
    their pixel. Measured magnitudes are ``MAG_AUTO + dzp``; without an absolute anchor they
    are put on the truth scale by the median offset of matched objects (``mag_offset`` in
    the result). Bins of ``bin_mag`` span the band's truth magnitudes.

    Parameters
    ----------
    truth : TruthCatalog
    source : str
        Name of the truth catalogue in the notes (its path).

    Returns
    -------
    results : dict band -> :class:`cosmodm_ops.qa.completeness.CompletenessResult`
    notes : dict band -> str
        Why a band was not scored.
    """
    from cosmodm_ops.qa.completeness import completeness_purity

    tin = _inside(truth, tile, footprint)
    results: dict[str, Any] = {}
    notes: dict[str, str] = {}
    for b, cat in cats.items():
        m = tin.mags.get(b.lower())
        if m is None:
            notes[b] = f"{source}: no mag_{b} column"
            continue
        ok = np.isfinite(m)
        if not ok.any():
            notes[b] = f"{source}: no truth object with mag_{b} inside the tile's coverage"
            continue
        mag = np.asarray(cat["MAG_AUTO"], float)
        mag = np.where(mag < 90, mag + dzp[b], np.nan)
        results[b] = completeness_purity(
            cat["ALPHAWIN_J2000"], cat["DELTAWIN_J2000"], mag, tin.ra[ok], tin.dec[ok], m[ok],
            edges=magnitude_bins(m[ok], bin_mag), radius_arcsec=radius_arcsec,
            true_is_star=None if tin.is_star is None else tin.is_star[ok],
            spread_model=cat["SPREAD_MODEL"], star_max=star_max, align_mags=not absolute)
        log.info("tile %s band %s vs truth: %d of %d matched, completeness 90%% at %s, 50%% at %s", tile.name, b,
                 results[b].n_matched, int(ok.sum()), results[b].mag90, results[b].mag50)
    return results, notes


def score_against_truth(truth: str | os.PathLike[str], tile: Tile, weights: Sequence[np.ndarray],
                        cats: Mapping[str, np.ndarray], dzp: Mapping[str, float], **kwargs: Any
                        ) -> tuple[dict[str, Any], dict[str, str]]:
    """Read the truth catalogue and :func:`run` on the footprint :func:`covered` by ``weights`` (the detection bands').

    Raises
    ------
    CoaddBadInput
        The truth catalogue cannot be read.
    """
    from cosmodm_ops.qa.completeness import read_truth

    try:
        tcat = read_truth(truth)
    except ValueError as err:
        raise CoaddBadInput(str(err)) from err
    return run(tcat, tile, covered(weights), cats, dzp, source=str(truth), **kwargs)
