"""Stage ``photcal``: the relative zeropoints of a band's input images, with the image-rejection loop.

:func:`run` calls :func:`cosmodm_ops.coadd.photcal.run` (least squares over the repeated star
measurements; the worst images removed while the bright-star repeatability exceeds
``qa.repeatability_mmag``). The CCDs of a single exposure do not overlap and share the
exposure's zeropoint: there is nothing to solve, every zeropoint is 0 and the result says
why (``note``). Pure: star tables in, :class:`RelativeZeropoints` out.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cosmodm_ops.coadd import photcal
from cosmodm_ops.coadd.inputs import SE_MAGZERO, CoaddBadInput
from cosmodm_ops.config import Config

__all__ = ["RelativeZeropoints", "run", "settings_from_config"]

log = logging.getLogger(__name__)


@dataclass
class RelativeZeropoints:
    """The band's relative calibration, and the images left out of the coadd so far.

    Attributes
    ----------
    zeropoints, errors : ndarray, shape (n_images,)
        ``m_cal = m_inst + zp`` (mag); NaN for a removed image.
    repeatability : Repeatability or None
        None when nothing was solved (one exposure).
    passed : bool
        Bright-star repeatability within the threshold.
    removed : list of dict
        ``{"name", "reason", "iteration"}`` in the order of removal.
    note : str or None
        Why nothing was solved.
    settings : PhotcalSettings
    """

    zeropoints: np.ndarray
    errors: np.ndarray
    repeatability: photcal.Repeatability | None
    passed: bool
    settings: photcal.PhotcalSettings
    removed: list[dict[str, Any]] = field(default_factory=list)
    note: str | None = None

    @property
    def used(self) -> list[int]:
        """Indices of the images still in the coadd (finite zeropoint)."""
        return [i for i in range(len(self.zeropoints)) if np.isfinite(self.zeropoints[i])]

    def remove(self, index: int, name: str, reason: str) -> None:
        """Leave image ``index`` out of both coadds (a later stage found it unusable)."""
        self.removed.append({"name": name, "reason": reason, "iteration": 0})
        self.zeropoints[index] = np.nan

    def flux_scales(self, magzero: float) -> np.ndarray:
        """SWarp FLXSCALE of each image to the coadd zeropoint ``magzero`` (0 for removed images)."""
        from cosmodm_ops.coadd.swarp import flux_scales

        return flux_scales(np.asarray(self.zeropoints) + SE_MAGZERO, magzero)


def settings_from_config(cfg: Config) -> photcal.PhotcalSettings:
    """The relative-calibration settings of a coadd (``coadd.min_stars_per_image``, ``coadd.photcal_floor_mag``)."""
    co = cfg.coadd
    return photcal.PhotcalSettings.from_config(cfg, min_stars=co.min_stars_per_image, floor_mag=co.photcal_floor_mag)


def run(tables: Sequence[photcal.StarMeasurements], names: Sequence[str], expnums: Sequence[int],
        settings: photcal.PhotcalSettings, *, tile: str, band: str) -> RelativeZeropoints:
    """Relative zeropoints of the images whose stars are ``tables``.

    Parameters
    ----------
    tables : sequence of StarMeasurements
        One per image.
    names : sequence of str
        Image names (for the removal records).
    expnums : sequence of int
        Exposure number of each image.
    settings : PhotcalSettings
    tile, band : str
        For messages.

    Raises
    ------
    CoaddBadInput
        The calibration is impossible (no overlaps between several exposures), or it removed
        every image.
    """
    n = len(tables)
    what, label = f"tile {tile} band {band}", f"coadd {tile} {band}"
    try:
        res = photcal.run(tables, settings, list(names))
    except photcal.PhotcalError as err:
        exposures = set(expnums)
        if len(exposures) != 1:
            msg = f"{what}: relative calibration impossible: {err}"
            raise CoaddBadInput(msg) from err
        # the CCDs of one exposure do not overlap, and share the exposure's zeropoint: nothing to solve
        note = (f"{n} input image(s) from one exposure ({next(iter(exposures))}): no overlaps to "
                f"calibrate against; the exposure's own zeropoint holds ({err})")
        log.warning("%s: %s", label, note)
        return RelativeZeropoints(np.zeros(n), np.zeros(n), None, True, settings, note=note)
    out = RelativeZeropoints(res.zeropoints.copy(), res.errors.copy(), res.repeatability, res.passed, settings,
                             removed=[{"name": r.name, "reason": r.reason, "iteration": r.iteration}
                                      for r in res.removed])
    for r in out.removed:
        log.warning("%s: image %s removed: %s", label, r["name"], r["reason"])
    if not out.used:
        msg = f"{what}: every input image was removed by the relative calibration"
        raise CoaddBadInput(msg)
    return out
