"""Relative photometric calibration: ensemble zeropoints from repeated star measurements.

The model (magnitudes in mag, "instrumental" = after the single-epoch zeropoint)::

    m_inst[k] = M[star(k)] - zp[image(k)] + noise[k],   noise ~ N(0, magerr[k]^2 + floor^2)

so that ``m_cal = m_inst + zp``. The weighted least-squares solution for all ``zp`` and
``M`` is found with the star magnitudes eliminated analytically: with per-detection
weights ``w = 1/sigma^2``, ``D_s = sum_k in s w_k`` and ``Mbar_s`` the weighted mean
instrumental magnitude of star ``s``, the zeropoints solve the image-by-image system
(the Schur complement of the star block)::

    S_ij = delta_ij sum_k in i w_k - sum_s sum_{k in i,s} sum_{l in j,s} w_k w_l / D_s
    S zp = b,   b_i = sum_k in i w_k (Mbar_s(k) - m_inst[k])

``S`` is a weighted graph Laplacian: singular along a constant shift of all zeropoints
(the gauge), fixed here by holding one image (``gauge=<index>``) or the mean
(``gauge='mean'``) at zero per connected group of images. ``S`` is also the Fisher
information of the zeropoints for Gaussian noise once the stars are profiled out, so
its gauge-fixed inverse is the Cramer-Rao bound (:func:`crlb_covariance`); weighted
least squares attains it.

``S`` is assembled with vectorised ``np.bincount`` and one COO matrix (stars grouped
by how many images saw them), never with Python loops over stars; up to 4000 images the
duplicates are summed by a dense ``bincount`` and ``S`` is solved densely (Cholesky-type,
a 300-image tile with 180,000 detections in about 45 ms including the build), up to
``direct_limit`` images with SuperLU, above with Jacobi-preconditioned conjugate
gradients (:func:`solve_survey`: 100,000 images, 6 million detections in about 5 s and
2 GB). Memory grows as the sum over stars of ``n_s^2`` for a star seen ``n_s`` times.

Quality control (:func:`calibrate`): the repeatability of bright stars (the RMS of the
calibrated magnitude differences of pairs of measurements of the same star, divided by
sqrt(2) to give a per-measurement figure, in mmag) must not exceed
``qa.repeatability_mmag``; while it does, the image with the largest residual
chi^2 per star is removed and the system solved again, and every removal is recorded
with its reason. Per magnitude bin the repeatability is split into the statistical part
expected from ``magerr`` and the systematic rest ``sqrt(max(0, total^2 - stat^2))``.

Pure functions on arrays: no file I/O except :func:`read_star_measurements` and
:func:`plot_repeatability`. The modules, by concern:

- :mod:`.matching`: calibration stars per image (:func:`select_stars`), matched across images;
- :mod:`.solver`: the normal system, its solution and the Cramer-Rao bound; the survey-wide solve;
- :mod:`.pairstats`: the repeatability statistics and their plot;
- :mod:`.iteration`: the removal loop (:func:`calibrate`, :func:`run`), settings and result.
"""

from __future__ import annotations

from cosmodm_ops.coadd.photcal.iteration import PhotcalResult, PhotcalSettings, RemovedImage, calibrate, run
from cosmodm_ops.coadd.photcal.matching import (
    Detections,
    PhotcalError,
    StarMeasurements,
    match_stars,
    read_star_measurements,
    select_stars,
)
from cosmodm_ops.coadd.photcal.pairstats import Repeatability, plot_repeatability, repeatability
from cosmodm_ops.coadd.photcal.solver import build_system, crlb_covariance, solve_survey, solve_zeropoints

__all__ = [
    "Detections",
    "PhotcalError",
    "PhotcalResult",
    "PhotcalSettings",
    "RemovedImage",
    "Repeatability",
    "StarMeasurements",
    "build_system",
    "calibrate",
    "crlb_covariance",
    "match_stars",
    "plot_repeatability",
    "read_star_measurements",
    "repeatability",
    "run",
    "select_stars",
    "solve_survey",
    "solve_zeropoints",
]
