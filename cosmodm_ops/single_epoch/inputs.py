"""Reading the inputs of a single-epoch job: detrended triples, reference catalogs, exposure metadata.

Every failure to read raises :class:`BadInputError` whose message names the file,
the HDU and the key (the CLI turns it into exit code 65: do not retry).
"""

from __future__ import annotations

import os
from collections.abc import Container
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fitsio
import numpy as np

__all__ = [
    "CP_DQ_TO_MASK",
    "BadInputError",
    "ExposureInfo",
    "camera_from_header",
    "ccd_header",
    "check_fits_file",
    "exposure_info",
    "image_hdus",
    "read_refcat",
    "require",
]


class BadInputError(ValueError):
    """An input file that cannot be processed as given (truncated, missing key, unknown camera)."""


#: INSTRUME / CAMERA header values -> camera names of cosmodm_ops.model.CAMERA_NAMES.
_CAMERAS = {"decam": "decam", "decam-mini": "decam-mini", "megaprime": "megacam", "megacam": "megacam",
            "gpc1": "gpc1"}

#: Default survey of each camera (include/configs/surveys).
DEFAULT_SURVEY = {"decam": "des", "decam-mini": "demo", "megacam": "cfhtls", "gpc1": "ps1"}

#: DECam Community Pipeline DQ codes -> our mask bits (detrend.MASK_BITS). The CP writes one code
#: per pixel (1 bad, 2 saturated, 3 interpolated, 4 cosmic ray, 5 bleed/bad column, 6 edge bleed,
#: 7 streak, 8 edge); codes 1, 3, 5 are treated as bad pixels.
CP_DQ_TO_MASK = {1: 1, 2: 2, 3: 1, 4: 8, 5: 1, 6: 4, 7: 1, 8: 16}


#: First bytes of compressed containers that FITS readers would open silently (or not at all).
_CONTAINERS = {b"\x1f\x8b": ("gzip", ".gz", "gunzip it (or name it .fits.gz)"),
               b"BZh": ("bzip2", ".bz2", "bunzip2 it"), b"PK\x03\x04": ("zip", ".zip", "unzip it")}


def check_fits_file(path: str | os.PathLike[str]) -> Path:
    """``path`` if it is a non-empty FITS file (or a container its name declares); else :class:`BadInputError`.

    Checked before any reader opens it, so the message says what the file is rather than what a
    reader made of it: missing, empty, a compressed container under a FITS name, or not FITS at all.
    """
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a FITS file" if path.is_dir() else "not found"
        msg = f"{path}: {what}; expected a FITS file (check the path)"
        raise BadInputError(msg)
    with path.open("rb") as f:
        head = f.read(80)
    if not head:
        msg = f"{path}: empty file (0 bytes); expected a FITS file (transfer it again from its source)"
        raise BadInputError(msg)
    for magic, (kind, ext, fix) in _CONTAINERS.items():
        if head.startswith(magic) and not path.name.endswith(ext):
            msg = f"{path}: is {kind}-compressed but named {path.suffix!r}; expected a FITS file: {fix}"
            raise BadInputError(msg)
    if not any(head.startswith(m) for m in _CONTAINERS) and not head.startswith(b"SIMPLE  ="):
        msg = f"{path}: not a FITS file (expected 'SIMPLE  =' in the first card, found {head[:20]!r})"
        raise BadInputError(msg)
    return path


def require(header: Any, key: str, path: str | os.PathLike[str], hdu: int | str) -> Any:
    """``header[key]`` or a :class:`BadInputError` naming the file, HDU and key."""
    if key not in header:
        msg = f"{path} HDU {hdu}: header key {key!r} is missing; the pipeline needs it (fix the file or its origin)"
        raise BadInputError(msg)
    return header[key]


def camera_from_header(header: Any, path: str | os.PathLike[str], hdu: int | str = 0) -> str:
    """The camera name from CAMERA (our simulator) or INSTRUME; unknown cameras are bad input."""
    raw = header.get("CAMERA") or header.get("INSTRUME")
    if raw is None:
        msg = f"{path} HDU {hdu}: neither 'CAMERA' nor 'INSTRUME' is set: cannot tell the camera (give --camera NAME)"
        raise BadInputError(msg)
    name = str(raw).strip().lower()
    if name not in _CAMERAS:
        msg = (f"{path} HDU {hdu}: key 'INSTRUME'/'CAMERA' = {raw!r} is not a known camera; expected one of "
               f"{sorted(set(_CAMERAS.values()))} (give --camera NAME if the file comes from one of them)")
        raise BadInputError(msg)
    return _CAMERAS[name]


def ccd_header(primary_text: str, header: Any, drop: Container[str] = ()) -> Any:
    """The header of one CCD's products: the exposure's primary keys, then the CCD HDU's own keys over them.

    Both go through :func:`cosmodm_ops.fits.clean_header` (no structural or tile-compression keys). The
    primary's HISTORY and COMMENT cards are kept; the CCD HDU's are not, nor its keys in ``drop``.

    Parameters
    ----------
    primary_text : str
        The primary header as text, cards separated by newlines (``Header.tostring(sep="\\n")``).
    header : astropy Header
        The CCD HDU's header.
    drop : container of str
        Keys of the CCD HDU to leave out (e.g. raw-frame keys of a detrended CCD).

    Returns
    -------
    astropy Header
        A new header; the inputs are not modified.
    """
    from astropy.io import fits as afits

    from cosmodm_ops.fits import clean_header

    out = clean_header(afits.Header.fromstring(primary_text, sep="\n"))
    for card in clean_header(header).cards:
        if card.keyword in ("HISTORY", "COMMENT") or card.keyword in drop:
            continue
        out[card.keyword] = (card.value, card.comment)
    return out


@dataclass(frozen=True)
class ExposureInfo:
    """Exposure-level metadata (common data model)."""

    camera: str
    expnum: int
    band: str
    exptime: float
    mjd_obs: float
    night: str


def _mjd_obs(header: dict[str, Any], path: str | os.PathLike[str]) -> float:
    """MJD-OBS, else DATE-OBS (ISO UTC) converted; neither is bad input naming both keys."""
    for key in ("MJD-OBS", "DATE-OBS"):
        value = header.get(key)
        if value is None or str(value).strip() == "":
            continue
        try:
            if key == "MJD-OBS":
                return float(value)
            from astropy.time import Time

            return float(Time(str(value).strip(), format="isot", scale="utc").mjd)
        except ValueError as err:
            msg = f"{path} HDU 0: key {key!r} = {value!r} is not a valid time ({err}); fix the header"
            raise BadInputError(msg) from err
    msg = (f"{path} HDU 0: header keys 'MJD-OBS' and 'DATE-OBS' are both missing; the pipeline needs the "
           "observation time (fix the file or its origin)")
    raise BadInputError(msg)


def exposure_info(primary: Any, path: str | os.PathLike[str], first_ext: Any | None = None) -> ExposureInfo:
    """Exposure metadata from the primary header (keys inherited by the first extension are accepted)."""
    merged: dict[str, Any] = {}
    if first_ext is not None:
        merged.update({k: first_ext[k] for k in first_ext if k})
    merged.update({k: primary[k] for k in primary if k})
    camera = camera_from_header(merged, path, 0)
    expnum = int(require(merged, "EXPNUM", path, 0))
    band = merged.get("BAND")
    if band is None:
        band = str(require(merged, "FILTER", path, 0)).split()[0]
    exptime = float(require(merged, "EXPTIME", path, 0))
    mjd = _mjd_obs(merged, path)
    nite = merged.get("NITE")
    if nite is not None and len(str(nite)) == 8:
        s = str(nite)
        night = f"{s[:4]}-{s[4:6]}-{s[6:]}"
    else:
        from astropy.time import Time

        # the observing night starts at local noon; at CTIO (UTC-4/-5) that is MJD - 0.5 rounded down
        night = Time(mjd - 0.5, format="mjd").strftime("%Y-%m-%d")
    return ExposureInfo(camera=camera, expnum=expnum, band=str(band).strip(), exptime=exptime, mjd_obs=mjd,
                        night=night)


def image_hdus(path: str | os.PathLike[str]) -> list[tuple[int, str]]:
    """(HDU index, EXTNAME) of every image HDU with data; a truncated or unreadable file is bad input."""
    path = check_fits_file(path)
    try:
        with fitsio.FITS(str(path)) as f:
            out = []
            for i, hdu in enumerate(f):
                info = hdu.get_info()
                if hdu.get_exttype() in ("IMAGE_HDU",) and info.get("ndims", 0) == 2:
                    out.append((i, hdu.get_extname() or str(i)))
            for i, _ in out:
                # touch the last pixel of every HDU: a truncated file fails here, not in a worker
                f[i][-1:, -1:]
    except (OSError, ValueError) as err:
        msg = f"{path}: cannot read FITS (truncated or corrupt?): {err}"
        raise BadInputError(msg) from err
    if not out:
        msg = f"{path}: no 2-D image HDU found"
        raise BadInputError(msg)
    return out


def read_refcat(path: str | os.PathLike[str], band: str | None = None, mjd_obs: float | None = None
                ) -> dict[str, np.ndarray | str | None]:
    """A reference catalog: ra, dec (deg), ra_err/dec_err (mas), mag and its name.

    Accepts Gaia-like tables (``ra, dec, ra_error, dec_error, phot_g_mean_mag``, proper
    motions applied to ``mjd_obs`` when present) and the simulator's photometric
    catalogs (``mag_<band>``). ``mag_system`` is ``band`` when the magnitude is in the
    exposure's band, ``gaia_g`` otherwise (then zeropoints are not measured).
    """
    path = check_fits_file(path)
    try:
        data = fitsio.read(str(path), ext=1)
    except (OSError, ValueError) as err:
        msg = f"{path} HDU 1: cannot read reference catalog: {err}"
        raise BadInputError(msg) from err
    names = {n.lower(): n for n in data.dtype.names}
    for key in ("ra", "dec"):
        if key not in names:
            msg = f"{path} HDU 1: column {key!r} is missing from the reference catalog (have {list(names)})"
            raise BadInputError(msg)
    ra = np.asarray(data[names["ra"]], float)
    dec = np.asarray(data[names["dec"]], float)
    n = len(ra)
    ra_err = np.asarray(data[names["ra_error"]], float) if "ra_error" in names else np.full(n, 10.0)
    dec_err = np.asarray(data[names["dec_error"]], float) if "dec_error" in names else np.full(n, 10.0)
    if mjd_obs is not None and "pmra" in names and "pmdec" in names and "ref_epoch" in names:
        years = 2000.0 + (mjd_obs - 51544.5) / 365.25 - np.asarray(data[names["ref_epoch"]], float)
        pmra = np.nan_to_num(np.asarray(data[names["pmra"]], float))
        pmdec = np.nan_to_num(np.asarray(data[names["pmdec"]], float))
        dec = dec + pmdec * years / 3.6e6
        ra = ra + pmra * years / 3.6e6 / np.cos(np.deg2rad(dec))
    mag: np.ndarray | None = None
    system: str | None = None
    if band is not None and f"mag_{band.lower()}" in names:
        mag = np.asarray(data[names[f"mag_{band.lower()}"]], float)
        system = band
    elif "phot_g_mean_mag" in names:
        mag = np.asarray(data[names["phot_g_mean_mag"]], float)
        system = "gaia_g"
    elif "mag" in names:
        mag = np.asarray(data[names["mag"]], float)
        system = "unknown"
    return {"ra": ra, "dec": dec, "ra_err": np.nan_to_num(ra_err, nan=10.0),
            "dec_err": np.nan_to_num(dec_err, nan=10.0), "mag": mag, "mag_system": system}
