"""Relative calibration, the iteration: solve, judge the bright-star repeatability, remove the worst image, again.

:func:`calibrate` runs the loop on matched detections, recording every removal with its
reason; :func:`run` matches the stars of each image's table first (the pure step of the
coadd's ``photcal`` stage). Settings in :class:`PhotcalSettings`, outcome in :class:`PhotcalResult`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cosmodm_ops.coadd.photcal.matching import Detections, PhotcalError, StarMeasurements, match_stars
from cosmodm_ops.coadd.photcal.pairstats import Repeatability, repeatability
from cosmodm_ops.coadd.photcal.solver import NormalSystem, build_system, solve, solve_zeropoints

__all__ = ["PhotcalResult", "PhotcalSettings", "RemovedImage", "calibrate", "run"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PhotcalSettings:
    """Settings of the relative calibration (see :meth:`from_config`).

    Attributes
    ----------
    repeatability_mmag : float
        Maximum bright-star repeatability (``qa.repeatability_mmag``).
    match_radius_arcsec : float
        Star matching radius (``coadd.match_radius_arcsec``).
    snr_min : float
        Star S/N cut (``coadd.star_snr_min``).
    spread_model_max : float
        Star/galaxy cut (``single_epoch.spread_model_star_max``).
    bright_magerr : float
        Per-measurement error of "bright" stars (mag).
    floor_mag : float
        Systematic error per measurement added to the weights (mag).
    min_stars : int
        Images with fewer matched stars are removed before solving.
    max_removed_fraction : float
        Stop removing images beyond this fraction (the calibration then fails QA).
    gauge : int or 'mean'
    """

    repeatability_mmag: float = 30.0
    match_radius_arcsec: float = 1.0
    snr_min: float = 20.0
    spread_model_max: float = 0.003
    bright_magerr: float = 0.01
    floor_mag: float = 0.0
    min_stars: int = 5
    max_removed_fraction: float = 0.5
    gauge: int | str = "mean"

    @classmethod
    def from_config(cls, config: Any, **overrides: Any) -> PhotcalSettings:
        """From a :class:`cosmodm_ops.config.Config` (its ``qa``, ``coadd`` and ``single_epoch`` sections)."""
        values = {
            "repeatability_mmag": config.qa.repeatability_mmag,
            "match_radius_arcsec": config.coadd.match_radius_arcsec,
            "snr_min": config.coadd.star_snr_min,
            "spread_model_max": config.single_epoch.spread_model_star_max,
        }
        values.update(overrides)
        return cls(**values)


@dataclass(frozen=True)
class RemovedImage:
    """An image left out of the calibration, and why."""

    index: int
    name: str
    reason: str
    iteration: int


@dataclass(frozen=True)
class PhotcalResult:
    """Outcome of :func:`calibrate`.

    Attributes
    ----------
    zeropoints, errors : ndarray, shape (n_images,)
        ``m_cal = m_inst + zp`` (mag) and 1-sigma errors; NaN for removed images.
    removed : list of RemovedImage
        In the order of removal, each with its reason.
    repeatability : Repeatability
        Of the final solution.
    passed : bool
        Bright-star repeatability within the threshold.
    iterations : int
        Number of solves.
    history_mmag : list of float
        Bright-star repeatability after each solve.
    image_names : list of str
    n_components : int
        Connected groups of images in the final solution (1 is normal).
    """

    zeropoints: np.ndarray
    errors: np.ndarray
    removed: list[RemovedImage]
    repeatability: Repeatability
    passed: bool
    iterations: int
    history_mmag: list[float] = field(default_factory=list)
    image_names: list[str] = field(default_factory=list)
    n_components: int = 1

    def qa(self) -> dict[str, Any]:
        """Scalar QA values (for the QA gate and the archive)."""
        return {
            "repeatability_mmag": self.repeatability.bright_mmag,
            "repeatability_sys_mmag": self.repeatability.bright_sys_mmag,
            "n_bright_pairs": self.repeatability.n_bright_pairs,
            "n_images": len(self.zeropoints),
            "n_removed": len(self.removed),
            "passed": self.passed,
            "iterations": self.iterations,
        }


def _image_chi2(system: NormalSystem, zp: np.ndarray, bright_magerr: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-image mean normalised squared residual of its bright detections (all detections if none)."""
    det = system.det
    zpd = zp[det.image]
    calm = det.mag + zpd
    d = np.bincount(det.star, system.weight * calm, minlength=det.n_stars)
    mstar = d / system.star_weight
    r2 = (calm - mstar[det.star]) ** 2 * system.weight
    bright = det.magerr <= bright_magerr
    n_b = np.bincount(det.image, bright, minlength=det.n_images)
    use = np.where(n_b[det.image] >= 3, bright, True)
    n = np.bincount(det.image, use, minlength=det.n_images)
    chi2 = np.bincount(det.image, r2 * use, minlength=det.n_images) / np.where(n > 0, n, 1)
    rms = np.sqrt(
        np.bincount(det.image, (calm - mstar[det.star]) ** 2 * use, minlength=det.n_images) / np.maximum(n, 1)
    )
    return np.where(n > 0, chi2, -np.inf), rms


def calibrate(
    det: Detections,
    settings: PhotcalSettings | None = None,
    image_names: Sequence[str] | None = None,
) -> PhotcalResult:
    """Solve the zeropoints, removing bad images until the bright-star repeatability passes.

    Parameters
    ----------
    det : Detections
        Matched star measurements (:func:`match_stars`).
    settings : PhotcalSettings, optional
    image_names : sequence of str, optional
        Names for the removal records (default ``image<k>``).

    Returns
    -------
    PhotcalResult

    Notes
    -----
    The errors follow from ``magerr`` (and ``settings.floor_mag``) alone; where the data
    carry a systematic floor (``repeatability.bright_sys_mmag``), set ``floor_mag`` to it
    for realistic errors and weights.
    """
    st = settings or PhotcalSettings()
    names = list(image_names) if image_names is not None else [f"image{k}" for k in range(det.n_images)]
    if len(names) != det.n_images:
        msg = f"{len(names)} image names for {det.n_images} images"
        raise PhotcalError(msg)
    active = np.ones(det.n_images, bool)
    removed: list[RemovedImage] = []
    history: list[float] = []
    max_removed = int(st.max_removed_fraction * det.n_images)
    iteration = 0
    while True:
        iteration += 1
        system = build_system(det, active, st.floor_mag)
        few = active & (system.n_per_image < st.min_stars)
        if few.any():
            for k in np.flatnonzero(few):
                reason = f"only {system.n_per_image[k]} matched stars (< min_stars={st.min_stars})"
                removed.append(RemovedImage(int(k), names[k], reason, iteration))
            active &= ~few
            continue
        if active.sum() < 2:
            msg = f"fewer than 2 images with at least {st.min_stars} matched stars: nothing to calibrate"
            raise PhotcalError(msg)
        zp, _, labels = solve(system, st.gauge)
        rep = repeatability(det, zp, bright_magerr=st.bright_magerr)
        history.append(rep.bright_mmag)
        passed = bool(np.isfinite(rep.bright_mmag) and rep.bright_mmag <= st.repeatability_mmag)
        if not np.isfinite(rep.bright_mmag):
            # no pair of bright measurements: nothing to judge the images by; QA fails, nothing is removed
            log.warning(
                "photcal: no bright star pairs (magerr <= %g); repeatability unknown", st.bright_magerr
            )
            break
        if passed or len(removed) >= max_removed:
            break
        chi2, rms = _image_chi2(system, zp, st.bright_magerr)
        chi2[~active] = -np.inf
        worst = int(np.argmax(chi2))
        reason = (
            f"bright-star repeatability {rep.bright_mmag:.1f} mmag > {st.repeatability_mmag:g} mmag; "
            f"largest residual chi2/star {chi2[worst]:.1f} (rms {rms[worst] * 1000:.1f} mmag "
            f"over {system.n_per_image[worst]} stars)"
        )
        log.info("photcal: removing %s: %s", names[worst], reason)
        removed.append(RemovedImage(worst, names[worst], reason, iteration))
        active[worst] = False
    zp, err = solve_zeropoints(det, gauge=st.gauge, active=active, floor_mag=st.floor_mag)
    zp[~active] = np.nan
    err[~active] = np.nan
    rep = repeatability(det, zp, bright_magerr=st.bright_magerr)
    n_comp = len(np.unique(labels[labels >= 0]))
    if n_comp > 1:
        log.warning("photcal: %d disconnected groups of images; each has its mean held at zero", n_comp)
    return PhotcalResult(zp, err, removed, rep, passed, iteration, history, names, n_comp)


def run(
    tables: Sequence[StarMeasurements],
    settings: PhotcalSettings | None = None,
    image_names: Sequence[str] | None = None,
) -> PhotcalResult:
    """Match the stars of each image's table and calibrate (the pure step of the coadd's relative calibration)."""
    st = settings or PhotcalSettings()
    det = match_stars(tables, st.match_radius_arcsec)
    return calibrate(det, st, image_names)
