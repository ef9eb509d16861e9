"""Stage ``stars``: the calibration stars of every input catalog (``MAG_PSF``, SPREAD_MODEL and S/N cuts).

:func:`run` selects them from catalogs in memory (structured arrays, as fitsio reads a
SExtractor FITS_LDAC ``LDAC_OBJECTS`` table); :func:`read` reads each input's catalog file
and selects the same stars, with errors that name the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cosmodm_ops.coadd.inputs import CoaddBadInput, CoaddInput
from cosmodm_ops.coadd.photcal import PhotcalError, StarMeasurements, read_star_measurements, select_stars
from cosmodm_ops.config import Config

__all__ = ["StarCuts", "read", "run"]


@dataclass(frozen=True)
class StarCuts:
    """The star selection of the relative calibration.

    Attributes
    ----------
    snr_min : float
        Minimum S/N (``coadd.star_snr_min``).
    spread_model_max : float
        Maximum ``|SPREAD_MODEL|`` (``single_epoch.spread_model_star_max``).
    mag_col : str
        The magnitude column (``MAG_PSF``).
    """

    snr_min: float
    spread_model_max: float
    mag_col: str = "MAG_PSF"

    @classmethod
    def from_config(cls, cfg: Config) -> StarCuts:
        """From ``coadd.star_snr_min`` and ``single_epoch.spread_model_star_max``."""
        return cls(snr_min=cfg.coadd.star_snr_min, spread_model_max=cfg.single_epoch.spread_model_star_max)


def run(catalogs: Sequence[np.ndarray | Any], cuts: StarCuts) -> list[StarMeasurements]:
    """The calibration stars of each catalog (pure: arrays in, star tables out).

    Raises
    ------
    CoaddBadInput
        A catalog without the needed columns.
    """
    try:
        return [select_stars(c, mag_col=cuts.mag_col, spread_model_max=cuts.spread_model_max,
                             snr_min=cuts.snr_min) for c in catalogs]
    except PhotcalError as err:
        raise CoaddBadInput(str(err)) from err


def read(inputs: Sequence[CoaddInput], cuts: StarCuts) -> list[StarMeasurements]:
    """The calibration stars of each input's catalog file, in input order.

    Raises
    ------
    CoaddBadInput
        A catalog that cannot be read or lacks the needed columns (the message names the file).
    """
    tables = []
    for inp in inputs:
        try:
            tables.append(read_star_measurements(inp.files["catalog"].path, mag_col=cuts.mag_col,
                                                 snr_min=cuts.snr_min, spread_model_max=cuts.spread_model_max))
        except PhotcalError as err:
            raise CoaddBadInput(str(err)) from err
    return tables
