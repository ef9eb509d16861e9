"""Stage ``detection``: the CHI-MEAN detection image of a tile's detection bands, and its weight.

:func:`run` (pure) returns the image (:func:`chi_mean`) and a weight that is 1 where every
detection band has data and 0 elsewhere; :func:`write` puts both, uncompressed, into the
work folder for SExtractor's dual-image mode.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cosmodm_ops.coadd.imageio import write_plain

__all__ = ["chi_mean", "detection_weight", "run", "write"]


def chi_mean(images: Sequence[np.ndarray], weights: Sequence[np.ndarray]) -> np.ndarray:
    """The CHI-MEAN detection image of several bands (Drlica-Wagner et al. 2018).

    ``chi = sqrt(sum_b f_b^2 w_b)`` is, for pure noise, chi-distributed with ``n`` degrees of
    freedom (``n`` bands with weight > 0 at the pixel); it is shifted by that distribution's
    mean ``mu_n = sqrt(2) Gamma((n+1)/2) / Gamma(n/2)`` and divided by its standard deviation
    ``sqrt(n - mu_n^2)``, so sky pixels have mean 0 and unit variance whatever ``n``.
    Pixels no band covers are 0.
    """
    from scipy.special import gammaln

    chi2 = np.zeros(images[0].shape, np.float64)
    nb = np.zeros(images[0].shape, np.int32)
    for img, w in zip(images, weights, strict=True):
        good = (w > 0) & np.isfinite(img)
        chi2 += np.where(good, np.asarray(img, np.float64) ** 2 * np.where(good, w, 0.0), 0.0)
        nb += good
    out = np.zeros_like(chi2)
    for k in range(1, len(images) + 1):
        sel = nb == k
        mu = math.sqrt(2.0) * math.exp(gammaln((k + 1) / 2.0) - gammaln(k / 2.0))
        out[sel] = (np.sqrt(chi2[sel]) - mu) / math.sqrt(k - mu * mu)
    return out.astype(np.float32)


def detection_weight(weights: Sequence[np.ndarray]) -> np.ndarray:
    """1 (float32) where every band's weight is > 0, else 0."""
    det_w = np.ones(weights[0].shape, np.float32)
    for w in weights:
        det_w[w <= 0] = 0.0
    return det_w


def run(images: Sequence[np.ndarray], weights: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The detection image (:func:`chi_mean`) and its weight (:func:`detection_weight`) of the detection bands."""
    return chi_mean(images, weights), detection_weight(weights)


def write(work: Path, det: np.ndarray, det_w: np.ndarray, header: Any) -> tuple[Path, Path]:
    """``det.fits`` and ``det.weight.fits`` in ``work`` (plain FITS with the tile's header)."""
    return write_plain(work / "det.fits", det, header), write_plain(work / "det.weight.fits", det_w, header)
