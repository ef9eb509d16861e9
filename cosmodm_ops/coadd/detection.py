"""Stage ``detection``: the multi-band detection image of a tile's detection bands, and its weight.

:func:`run` (pure) returns the image and a weight that is 1 where every detection band has data
and 0 elsewhere; :func:`write` puts both, uncompressed, into the work folder for SExtractor's
dual-image mode. Two images (``coadd.detection_image``):

- ``snr_mean`` (default, :func:`snr_mean`): the mean of the bands' S/N images, Gaussian with
  unit variance on the sky. A negative noise fluctuation stays negative, so SExtractor does not
  detect it: every detection has positive flux in the detection bands.
- ``chi_mean`` (:func:`chi_mean`, Drlica-Wagner et al. 2018): squares the fluxes, so a negative
  noise peak is detected like a positive one and then has no MAG_AUTO (negative flux) in the
  measurement bands: about 60% of the detections of a deep tile, kept for comparison.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cosmodm_ops.coadd.imageio import write_plain

__all__ = ["DETECTION_IMAGES", "chi_mean", "detection_weight", "run", "snr_mean", "write"]

#: The detection images :func:`run` makes (``coadd.detection_image``).
DETECTION_IMAGES = ("snr_mean", "chi_mean")


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


def snr_mean(images: Sequence[np.ndarray], weights: Sequence[np.ndarray]) -> np.ndarray:
    """The mean S/N image of several bands: ``sum_b f_b sqrt(w_b) / sqrt(n)``.

    ``n`` is the number of bands with weight > 0 at the pixel: for pure noise each term is a unit
    Gaussian, so the sum divided by ``sqrt(n)`` is one too (mean 0, variance 1, symmetric), and
    a source's S/N adds linearly over the bands. Pixels no band covers are 0.
    """
    snr = np.zeros(images[0].shape, np.float64)
    nb = np.zeros(images[0].shape, np.int32)
    for img, w in zip(images, weights, strict=True):
        good = (w > 0) & np.isfinite(img)
        snr += np.where(good, np.asarray(img, np.float64) * np.sqrt(np.where(good, w, 0.0)), 0.0)
        nb += good
    return np.where(nb > 0, snr / np.sqrt(np.maximum(nb, 1)), 0.0).astype(np.float32)


def detection_weight(weights: Sequence[np.ndarray]) -> np.ndarray:
    """1 (float32) where every band's weight is > 0, else 0."""
    det_w = np.ones(weights[0].shape, np.float32)
    for w in weights:
        det_w[w <= 0] = 0.0
    return det_w


def run(images: Sequence[np.ndarray], weights: Sequence[np.ndarray], method: str = "snr_mean"
        ) -> tuple[np.ndarray, np.ndarray]:
    """The detection image (``method``: :data:`DETECTION_IMAGES`) and its weight (:func:`detection_weight`)."""
    if method not in DETECTION_IMAGES:
        msg = f"coadd.detection_image {method!r}: expected one of {', '.join(DETECTION_IMAGES)}"
        raise ValueError(msg)
    make = snr_mean if method == "snr_mean" else chi_mean
    return make(images, weights), detection_weight(weights)


def write(work: Path, det: np.ndarray, det_w: np.ndarray, header: Any) -> tuple[Path, Path]:
    """``det.fits`` and ``det.weight.fits`` in ``work`` (plain FITS with the tile's header)."""
    return write_plain(work / "det.fits", det, header), write_plain(work / "det.weight.fits", det_w, header)
