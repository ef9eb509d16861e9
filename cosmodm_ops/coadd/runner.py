"""Compatibility home of the coadd entry points: the names workflows, the CLI and bench imported from here.

The coadd is now one module per stage (see DESIGN.md, "Where things live"):
:func:`~cosmodm_ops.coadd.band.run_band` (one tile and band) and
:func:`~cosmodm_ops.coadd.tile.calibrate_tile` (the multi-band calibration) read as the lists of
their stages; inputs and errors are in :mod:`cosmodm_ops.coadd.inputs`, the detection image in
:mod:`cosmodm_ops.coadd.detection`. New code imports from those homes.
"""

from __future__ import annotations

from cosmodm_ops.coadd.band import run_band
from cosmodm_ops.coadd.detection import chi_mean
from cosmodm_ops.coadd.inputs import SE_MAGZERO, CoaddBadInput, CoaddInput, InputFile, NoInputsError
from cosmodm_ops.coadd.tile import calibrate_tile

__all__ = [
    "SE_MAGZERO",
    "CoaddBadInput",
    "CoaddInput",
    "InputFile",
    "NoInputsError",
    "calibrate_tile",
    "chi_mean",
    "run_band",
]
