"""Calibration files of the raw path: find them in the calibration folder, check them, read one CCD's HDU.

The folder holds ``bias.fits``, ``flat_<band>.fits``, ``bpm.fits`` and optionally ``starflat_<band>.fits``
(:data:`CALIB_FILES`; a tile-compressed ``.fz`` twin is accepted), one HDU per CCD named by EXTNAME, in the
trimmed frame. A missing or malformed file is a :class:`~cosmodm_ops.single_epoch.inputs.BadInputError`
naming the file, HDU and key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import fitsio
import numpy as np

from cosmodm_ops.single_epoch.inputs import BadInputError

__all__ = ["CALIB_FILES", "check_calib_file", "find_calib_files", "read_calib_hdu"]


#: Calibration files in the calib folder: role -> (file name pattern, required). ``{band}`` is the exposure's band;
#: a ``.fz`` twin (tile-compressed) is accepted too.
CALIB_FILES: dict[str, tuple[str, bool]] = {
    "bias": ("bias.fits", True),
    "flat": ("flat_{band}.fits", True),
    "starflat": ("starflat_{band}.fits", False),
    "bpm": ("bpm.fits", True),
}


def find_calib_files(calib: str | os.PathLike[str], band: str) -> dict[str, Path | None]:
    """Paths of the calibration files for ``band`` (None for a missing optional file).

    Raises
    ------
    BadInputError
        The folder or a required file is missing.
    """
    folder = Path(calib)
    if not folder.is_dir():
        msg = f"{folder}: calibration folder not found (give --calib DIR with bias.fits, flat_<band>.fits, bpm.fits)"
        raise BadInputError(msg)
    out: dict[str, Path | None] = {}
    for role, (pattern, required) in CALIB_FILES.items():
        name = pattern.format(band=band)
        found = next((p for p in (folder / name, folder / f"{name}.fz") if p.exists()), None)
        if found is None and required:
            msg = f"{folder / name}: {role} file for band {band!r} not found (HDU -, key -); the raw path needs it"
            raise BadInputError(msg)
        out[role] = found
    return out


def check_calib_file(path: Path, role: str, ccds: list[tuple[str, int]], shape: tuple[int, int]) -> None:
    """Check that a calibration file has an HDU of the trimmed ``shape`` for every (EXTNAME, CCDNUM), and
    that its pixels can be read to the end (a truncated file fails here, not in a worker)."""
    try:
        with fitsio.FITS(str(path)) as f:
            names = {}
            for i, hdu in enumerate(f):
                name = hdu.get_extname()
                if name:
                    names[name.upper()] = i
            for extname, ccdnum in ccds:
                idx = names.get(extname.upper())
                if idx is None:
                    msg = (f"{path} HDU {extname!r}: key 'EXTNAME' = {extname!r} (CCDNUM {ccdnum}) not found: "
                           f"the {role} file has no HDU for this CCD")
                    raise BadInputError(msg)
                dims = tuple(f[idx].get_info().get("dims", ()))
                if dims != shape:
                    msg = (f"{path} HDU {idx} ({extname}): keys 'NAXIS2','NAXIS1' = {dims}, expected the trimmed "
                           f"shape {shape} of the camera: use the {role} made for this camera (--calib)")
                    raise BadInputError(msg)
                f[idx][-1:, -1:]
    except BadInputError:
        raise
    except (OSError, ValueError) as err:
        msg = f"{path}: cannot read the {role} file (truncated or corrupt?): {err}"
        raise BadInputError(msg) from err



def read_calib_hdu(path: str | None, extname: str, dtype: Any) -> np.ndarray | None:
    """The HDU ``extname`` of a calibration file (as ``dtype`` unless None); None when ``path`` is None."""
    if path is None:
        return None
    with fitsio.FITS(path) as f:
        data = f[extname].read()
    return data if dtype is None else np.asarray(data, dtype=dtype)

