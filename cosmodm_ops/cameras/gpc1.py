"""Ingest of PS1 (GPC1) warps into the one data model: linear image, weight, data-model mask, zeropoint.

Reads the triple :mod:`cosmodm_ops.sim.warps` writes (image, ``.mask``, ``.wt``): undoes the asinh
compression (``F = BOFFSET + 2 BSOFTEN sinh(v / a)``), turns the variance into a weight (0 where the
variance is not finite or not positive), maps the PS1 mask bits onto the pipeline's
(:data:`cosmodm_ops.single_epoch.detrend.MASK_BITS`: BLANK/DETECTOR/FLAT/DARK -> BADPIX, SAT -> SATURATED,
CR -> CR, every other bit -> BADPIX), replaces blank pixels by 0 with weight 0, and gives the
zeropoint of the counts, ``MAGZERO = FPA.ZP + 2.5 log10(EXPTIME)``. A missing key is an error that
names the file and the key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Warp", "WarpError", "read_warp"]

_REQUIRED = ("CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2", "CD1_1", "CD2_2", "EXPTIME", "FPA.ZP", "BSOFTEN", "BOFFSET",
             "FPA.FILTERID", "MJD-OBS", "SKYCELL")


class WarpError(ValueError):
    """A warp that cannot be ingested; the message names the file and the key."""


@dataclass
class Warp:
    """One ingested warp. Arrays (ny, nx): image (counts), weight (1/counts^2), mask (data-model bits)."""

    image: np.ndarray
    weight: np.ndarray
    mask: np.ndarray
    magzero: float
    band: str
    skycell: str
    mjd: float
    header: dict[str, object]


def _mask_map(header) -> dict[int, int]:
    from cosmodm_ops.single_epoch.detrend import MASK_BITS

    ours = {"SAT": MASK_BITS["SATURATED"], "CR": MASK_BITS["CR"]}
    out = {}
    for k in range(32):
        name, val = header.get(f"MSKNAM{k:02d}"), header.get(f"MSKVAL{k:02d}")
        if name is None or val is None:
            continue
        out[int(val)] = ours.get(str(name).strip(), MASK_BITS["BADPIX"])
    return out


def read_warp(image_path: str | Path) -> Warp:
    """Read ``X.fits`` with ``X.mask.fits`` and ``X.wt.fits`` beside it."""
    import fitsio

    image_path = Path(image_path)
    stem = str(image_path)[: -len(".fits")]
    paths = {"mask": Path(f"{stem}.mask.fits"), "variance": Path(f"{stem}.wt.fits")}
    for what, p in paths.items():
        if not p.is_file():
            msg = f"{image_path}: its {what} file {p.name} is missing (a PS1 warp is image + .mask + .wt)"
            raise WarpError(msg)
    stored, header = fitsio.read(str(image_path), header=True)
    for key in _REQUIRED:
        if key not in header:
            msg = f"{image_path}: header key {key} missing (expected of a PS1 warp)"
            raise WarpError(msg)
    mask_in, mask_header = fitsio.read(str(paths["mask"]), header=True)
    variance = fitsio.read(str(paths["variance"])).astype(np.float64)
    image = header["BOFFSET"] + 2.0 * header["BSOFTEN"] * np.sinh(stored.astype(np.float64) / (2.5 * math.log10(math.e)))
    good = np.isfinite(image) & np.isfinite(variance) & (variance > 0)
    mask = np.zeros(stored.shape, np.int16)
    for bit, ours in _mask_map(mask_header).items():
        mask[(mask_in & bit) != 0] |= ours
    weight = np.where(good & (mask == 0), 1.0 / np.where(good, variance, 1.0), 0.0).astype(np.float32)
    band = str(header["FPA.FILTERID"]).split(".")[0]
    magzero = float(header["FPA.ZP"]) + 2.5 * math.log10(float(header["EXPTIME"]))
    return Warp(np.where(good, image, 0.0).astype(np.float32), weight, mask, magzero, band,
                str(header["SKYCELL"]).strip(), float(header["MJD-OBS"]), {k: header[k] for k in header})
