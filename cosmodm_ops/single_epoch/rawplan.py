"""The raw path's plan: validate a raw exposure and its calibration folder before any work.

:func:`raw_exposure_plan` (parent process) checks that the raw exposure is readable, that every CCD of
the camera is there with the raw shape of the camera layout and the header keys the detrend needs, and
that the calibration folder has the files of the exposure's band with one HDU per CCD. Anything wrong is
a :class:`~cosmodm_ops.single_epoch.inputs.BadInputError` naming the file, the HDU and the key (exit 65:
do not retry).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import fitsio
from astropy.io import fits as afits

from cosmodm_ops.config import CameraConfig, Config
from cosmodm_ops.single_epoch.inputs import BadInputError, ExposureInfo, exposure_info
from cosmodm_ops.single_epoch.rawcalib import check_calib_file, find_calib_files
from cosmodm_ops.single_epoch.rawcamera import camera_ccds, raw_sections

__all__ = ["RAW_CCD_KEYS", "raw_exposure_plan"]

log = logging.getLogger(__name__)

#: Header keys every raw CCD HDU must carry (electronics per amplifier and the trimmed-frame WCS).
RAW_CCD_KEYS = ("CCDNUM", "GAINA", "GAINB", "RDNOISEA", "RDNOISEB", "SATURATA", "SATURATB", "CTYPE1", "CTYPE2",
                "CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2", "CD1_1", "CD1_2", "CD2_1", "CD2_2")


def raw_exposure_plan(raw: str | os.PathLike[str], calib: str | os.PathLike[str] | None, cfg: Config,
                      check_calib: bool = True
                      ) -> tuple[list[tuple[int, str]], ExposureInfo, afits.Header, list[tuple[str, str]]]:
    """Validate a raw exposure and its calibration folder; the work plan of the exposure.

    Parameters
    ----------
    raw : path
        Raw exposure (multi-extension FITS, may be tile-compressed ``.fz``).
    calib : path
        Calibration folder (``bias.fits``, ``flat_<band>.fits``, ``bpm.fits``, optional ``starflat_<band>.fits``).
    cfg : Config
        The configuration; ``cfg.camera`` gives the raw layout.
    check_calib : bool
        Check every calibration HDU (:func:`~cosmodm_ops.single_epoch.rawcalib.check_calib_file`). False
        when the node's calibration cache checks them, once, when it builds an entry (a warm cache then reads
        nothing of the calibration files).

    Returns
    -------
    hdus : list of (hdu index, EXTNAME)
        The camera's science CCDs in file order (other HDUs, e.g. guide CCDs, are left out).
    info : ExposureInfo
    primary : astropy Header
        The primary header.
    calib_inputs : list of (role, path)
        Calibration files for the manifest's inputs.

    Raises
    ------
    BadInputError
        Unreadable or truncated file, unknown or mismatched camera, missing CCD, wrong raw shape,
        missing header key, missing calibration file or HDU. The message names the file, HDU and key.
    """
    path = Path(raw)
    if not path.exists():
        msg = f"{path}: raw exposure not found"
        raise BadInputError(msg)
    if calib is None:
        msg = f"{path}: the raw path needs a calibration folder (--calib DIR)"
        raise BadInputError(msg)
    camera = cfg.camera
    ccds = camera_ccds(camera)
    hdus, primary_hdr, first = _scan_raw(path, camera, ccds)
    primary = _to_astropy(primary_hdr)
    info = exposure_info(primary, path, _to_astropy(first) if first is not None else None)
    if info.camera != camera.name:
        msg = (f"{path} HDU 0: key 'CAMERA'/'INSTRUME' says camera {info.camera!r}, but the configured camera is "
               f"{camera.name!r} (pass --camera {info.camera} or fix the header)")
        raise BadInputError(msg)
    files = find_calib_files(calib, info.band)
    calib_inputs: list[tuple[str, str]] = []
    for role, cpath in files.items():
        if cpath is None:
            log.info("%s: no %s file for band %s: the zeropoint-flatness correction is skipped", calib, role,
                     info.band)
            continue
        if check_calib:
            check_calib_file(cpath, role, ccds, (camera.ccd_ny, camera.ccd_nx))
        calib_inputs.append((role, str(cpath)))
    return hdus, info, primary, calib_inputs


def _scan_raw(path: Path, camera: CameraConfig, ccds: list[tuple[str, int]]
              ) -> tuple[list[tuple[int, str]], Any, Any | None]:
    """The camera's CCD HDUs of the raw file (sorted by index), its primary header and the first CCD's header
    (fitsio headers)."""
    hdus: list[tuple[int, str]] = []
    try:
        with fitsio.FITS(str(path)) as f:
            primary_hdr = f[0].read_header()
            index = {}
            for i, hdu in enumerate(f):
                name = hdu.get_extname()
                if name and hdu.get_exttype() == "IMAGE_HDU":
                    index[name.upper()] = i
            first = None
            for extname, ccdnum in ccds:
                i = index.get(extname.upper())
                if i is None:
                    msg = (f"{path} HDU {extname!r}: key 'EXTNAME' = {extname!r} (CCDNUM {ccdnum}) not found: "
                           f"the {camera.name} camera needs every CCD")
                    raise BadInputError(msg)
                hdr = _check_raw_hdu(f, i, path, extname, ccdnum, camera)
                if first is None:
                    first = hdr
                hdus.append((i, extname))
    except BadInputError:
        raise
    except (OSError, ValueError) as err:
        msg = (f"{path}: cannot read FITS (truncated or corrupt?): {err}; expected a readable multi-extension "
               "FITS file: transfer it again from its source")
        raise BadInputError(msg) from err
    hdus.sort()
    return hdus, primary_hdr, first


def _check_raw_hdu(f: Any, i: int, path: Path, extname: str, ccdnum: int, camera: CameraConfig) -> Any:
    """The header of raw HDU ``i`` after checking its keys, CCDNUM, raw shape and that its pixels read."""
    hdr = f[i].read_header()
    for key in RAW_CCD_KEYS:
        if key not in hdr:
            msg = f"{path} HDU {i} ({extname}): header key {key!r} is missing; the raw path needs it"
            raise BadInputError(msg)
    if int(hdr["CCDNUM"]) != ccdnum:
        msg = (f"{path} HDU {i} ({extname}): key 'CCDNUM' = {hdr['CCDNUM']}, but camera "
               f"{camera.name} has CCDNUM {ccdnum} for {extname}")
        raise BadInputError(msg)
    dims = tuple(f[i].get_info().get("dims", ()))
    expect = raw_sections(camera, extname).raw_shape
    if dims != expect:
        msg = (f"{path} HDU {i} ({extname}): keys 'NAXIS2','NAXIS1' = {dims}, expected the raw shape "
               f"{expect} of camera {camera.name}")
        raise BadInputError(msg)
    try:
        f[i][-1:, -1:]  # a truncated file fails here, not in a worker
    except (OSError, ValueError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
        msg = (f"{path} HDU {i} ({extname}): pixel data truncated or corrupt ({first_line}); expected the "
               f"full {expect} raw image: transfer the file again from its source (retrying this job will not help)")
        raise BadInputError(msg) from err
    return hdr


def _to_astropy(hdr: Any) -> afits.Header:
    """fitsio header -> astropy Header (cards kept as they are; unparsable cards are skipped)."""
    out = afits.Header()
    for rec in hdr.records():
        name = rec.get("name")
        if not name or name in ("COMMENT", "HISTORY"):
            continue
        try:
            out[name] = (rec.get("value"), rec.get("comment") or "")
        except (ValueError, KeyError):
            continue
    return out

