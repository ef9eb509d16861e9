"""FITS image reading and writing for the coadd steps (astropy for headers and WCS, fitsio for compression).

The coadd's stages read single-epoch images and band coadds whatever their compression
(:func:`read_image`, :func:`image_hdu_header`), hand plain uncompressed copies to SWarp and
SExtractor (:func:`write_plain`), and write products RICE-compressed (:func:`compress_from`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from cosmodm_ops.coadd.inputs import CoaddBadInput

__all__ = [
    "compress_from",
    "image_hdu_header",
    "pixel_scale",
    "plain_header",
    "read_image",
    "wcs_of",
    "write_plain",
]


def image_hdu_header(path: Path) -> Any:
    """The astropy header of the first 2-D image HDU (compressed or not)."""
    from astropy.io import fits as afits

    with afits.open(path) as hdul:
        for hdu in hdul:
            if hdu.is_image and hdu.header.get("NAXIS", 0) == 2:
                return hdu.header.copy()
    msg = f"{path}: no 2-D image HDU"
    raise CoaddBadInput(msg)


def read_image(path: Path) -> tuple[np.ndarray, Any]:
    """(data float32, astropy header) of the first 2-D image HDU."""
    from astropy.io import fits as afits

    with afits.open(path) as hdul:
        for hdu in hdul:
            if hdu.is_image and hdu.header.get("NAXIS", 0) == 2:
                return np.asarray(hdu.data, dtype=np.float32), hdu.header.copy()
    msg = f"{path}: no 2-D image HDU"
    raise CoaddBadInput(msg)


def wcs_of(header: Any) -> Any:
    """The astropy WCS of a header (FITSFixedWarning silenced)."""
    from astropy.wcs import WCS, FITSFixedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        return WCS(header)


def pixel_scale(wcs: Any) -> float:
    """Pixel scale in arcsec (square root of the pixel area at the reference point)."""
    return float(math.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix))) * 3600.0)


def plain_header(header: Any) -> Any:
    """A copy of ``header`` without the extension, compression and checksum keywords."""
    out = header.copy()
    for key in ("XTENSION", "PCOUNT", "GCOUNT", "EXTNAME", "CHECKSUM", "DATASUM", "BSCALE", "BZERO", "INHERIT"):
        out.remove(key, ignore_missing=True, remove_all=True)
    return out


def write_plain(path: Path, data: np.ndarray, header: Any, dtype: Any = np.float32) -> Path:
    """Write ``data`` as an uncompressed primary HDU (for SWarp and SExtractor)."""
    from astropy.io import fits as afits

    afits.PrimaryHDU(np.ascontiguousarray(data, dtype=dtype), header=plain_header(header)).writeto(
        path, overwrite=True, output_verify="silentfix")
    return path


def compress_from(src: Path, dst: Path, extra: Mapping[str, tuple[Any, str]]) -> Path:
    """Write a plain FITS image RICE-compressed (q=4) with extra header keywords."""
    import fitsio

    from cosmodm_ops.fits import write_image

    data, header = fitsio.read(str(src), header=True)
    for key, (value, comment) in extra.items():
        header.add_record({"name": key, "value": value, "comment": comment})
    write_image(dst, data, header, compress=True)
    return dst
