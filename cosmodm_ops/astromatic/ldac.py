"""FITS_LDAC catalogs: read SExtractor output, write SCAMP reference catalogs, read SCAMP .head files."""

from __future__ import annotations

import os
from pathlib import Path

import fitsio
import numpy as np
from astropy.io import fits as afits

__all__ = ["read_ldac", "read_scamp_head", "write_reference_ldac"]


def read_ldac(path: str | os.PathLike[str], *, columns: list[str] | None = None) -> np.ndarray:
    """The LDAC_OBJECTS table of a FITS_LDAC catalog (first one) as a structured array.

    Raises ``ValueError`` naming the file when the table is missing.
    """
    path = Path(path)
    try:
        with fitsio.FITS(str(path)) as f:
            for hdu in f:
                if hdu.get_extname() == "LDAC_OBJECTS":
                    if hdu.get_nrows() == 0:
                        names = hdu.get_colnames() if columns is None else columns
                        return np.zeros(0, dtype=[(n, "f8") for n in names])
                    return hdu.read(columns=columns)
    except OSError as err:
        msg = f"{path}: cannot read FITS_LDAC catalog: {err}"
        raise ValueError(msg) from err
    msg = f"{path}: no LDAC_OBJECTS extension (not a FITS_LDAC catalog?)"
    raise ValueError(msg)


def write_reference_ldac(
    path: str | os.PathLike[str],
    ra: np.ndarray,
    dec: np.ndarray,
    *,
    ra_err_mas: np.ndarray | float = 10.0,
    dec_err_mas: np.ndarray | float = 10.0,
    mag: np.ndarray | float = 18.0,
    mag_err: np.ndarray | float = 0.01,
    epoch: float = 2015.5,
) -> Path:
    """Write an astrometric reference catalog in the LDAC layout SCAMP reads with ``-ASTREF_CATALOG FILE``.

    Parameters
    ----------
    ra, dec : ndarray, shape (n,)
        Positions in degrees (ICRS).
    ra_err_mas, dec_err_mas : ndarray or float
        Position errors in milliarcseconds.
    mag, mag_err : ndarray or float
        Reference magnitude and its error (mag).
    epoch : float
        Epoch of the positions (decimal year, OBSDATE column).
    """
    n = len(ra)
    full = lambda v: np.broadcast_to(np.asarray(v, dtype="f8"), (n,))
    era = full(ra_err_mas) / 3.6e6
    edec = full(dec_err_mas) / 3.6e6
    cols = [
        afits.Column("X_WORLD", "1D", "deg", array=np.asarray(ra, "f8")),
        afits.Column("Y_WORLD", "1D", "deg", array=np.asarray(dec, "f8")),
        afits.Column("ERRA_WORLD", "1E", "deg", array=np.maximum(era, edec).astype("f4")),
        afits.Column("ERRB_WORLD", "1E", "deg", array=np.minimum(era, edec).astype("f4")),
        afits.Column("ERRTHETA_WORLD", "1E", "deg", array=np.zeros(n, "f4")),
        afits.Column("MAG", "1E", "mag", array=full(mag).astype("f4")),
        afits.Column("MAGERR", "1E", "mag", array=full(mag_err).astype("f4")),
        afits.Column("OBSDATE", "1D", "yr", array=np.full(n, epoch)),
    ]
    hdr = afits.Header()
    hdr["NAXIS"] = 0
    card = hdr.tostring(padding=False)
    imhead = afits.BinTableHDU.from_columns(
        [afits.Column("Field Header Card", f"{len(card)}A", array=np.array([card]))], name="LDAC_IMHEAD"
    )
    objects = afits.BinTableHDU.from_columns(cols, name="LDAC_OBJECTS")
    path = Path(path)
    afits.HDUList([afits.PrimaryHDU(), imhead, objects]).writeto(path, overwrite=True)
    return path


def read_scamp_head(path: str | os.PathLike[str]) -> list[afits.Header]:
    """Headers of a SCAMP ``.head`` file, one per extension (UTF-8 text: non-ASCII is dropped)."""
    path = Path(path)
    try:
        raw = path.read_bytes().decode("utf-8", errors="replace")
    except OSError as err:
        msg = f"{path}: cannot read SCAMP header file: {err}"
        raise ValueError(msg) from err
    text = raw.encode("ascii", errors="ignore").decode("ascii")
    out: list[afits.Header] = []
    block: list[str] = []
    for line in text.splitlines():
        if line.strip() == "END":
            if block:
                out.append(afits.Header.fromstring("\n".join(ln.ljust(80)[:80] for ln in block), sep="\n"))
            block = []
        elif line.strip():
            block.append(line)
    if block:
        out.append(afits.Header.fromstring("\n".join(ln.ljust(80)[:80] for ln in block), sep="\n"))
    return out
