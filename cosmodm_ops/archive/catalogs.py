"""Catalog objects for the database: LDAC reading, HEALPix indexing, cone candidates.

No SQL here: :func:`read_ldac_objects` turns a FITS_LDAC catalog into plain column arrays,
:func:`cone_ranges` turns a cone into ranges of nested HEALPix indices to select candidates
with, and :func:`angular_distance` does the exact cut.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from cosmodm_ops.archive.schema import HEALPIX_ORDER

__all__ = [
    "OBJECT_FLOAT_COLUMNS",
    "ObjectColumns",
    "angular_distance",
    "cone_ranges",
    "healpix_index",
    "read_ldac_objects",
]

#: Float columns copied from LDAC (database name -> LDAC column candidates, first found wins).
OBJECT_FLOAT_COLUMNS: dict[str, tuple[str, ...]] = {
    "mag_auto": ("MAG_AUTO",),
    "magerr_auto": ("MAGERR_AUTO",),
    "mag_psf": ("MAG_PSF",),
    "magerr_psf": ("MAGERR_PSF",),
    "spread_model": ("SPREAD_MODEL",),
    "class_star": ("CLASS_STAR",),
}


@dataclass
class ObjectColumns:
    """Columns of a catalog, one array per column, all of length ``n``.

    ``ra``, ``dec`` in degrees (ICRS); ``hpx`` nested HEALPix index at order
    :data:`~cosmodm_ops.archive.schema.HEALPIX_ORDER`; missing float columns are NaN.
    """

    number: np.ndarray
    ra: np.ndarray
    dec: np.ndarray
    hpx: np.ndarray
    flags: np.ndarray
    floats: dict[str, np.ndarray]

    @property
    def n(self) -> int:
        return int(self.ra.size)


def healpix_index(ra: np.ndarray, dec: np.ndarray, order: int = HEALPIX_ORDER) -> np.ndarray:
    """Nested HEALPix index (int64) of positions in degrees."""
    from astropy import units as u
    from astropy_healpix import HEALPix

    hp = HEALPix(nside=2**order, order="nested")
    return np.asarray(hp.lonlat_to_healpix(np.asarray(ra, float) * u.deg, np.asarray(dec, float) * u.deg),
                      dtype=np.int64)


def read_ldac_objects(path: str | os.PathLike[str]) -> ObjectColumns:
    """Read the objects of a FITS_LDAC catalog (HDU ``LDAC_OBJECTS``, or the first table).

    Positions come from ``ALPHAWIN_J2000``/``DELTAWIN_J2000`` when present, else
    ``ALPHA_J2000``/``DELTA_J2000`` (else ``RA``/``DEC``). Rows with non-finite positions are dropped.

    Raises
    ------
    ValueError
        When the file is not readable or has no position columns; the message names the file and HDU.
    """
    import fitsio

    try:
        with fitsio.FITS(str(path)) as fits:
            names = [hdu.get_extname() for hdu in fits]
            if "LDAC_OBJECTS" in names:
                hdu_name = "LDAC_OBJECTS"
            else:
                tables = [i for i, h in enumerate(fits) if h.get_exttype() in ("BINARY_TBL", "ASCII_TBL")]
                if not tables:
                    msg = f"{path}: no LDAC_OBJECTS HDU and no table HDU: not a catalog"
                    raise ValueError(msg)
                hdu_name = tables[-1]
            data = fits[hdu_name].read()
    except OSError as err:
        msg = f"{path}: not a readable FITS catalog ({str(err).strip().splitlines()[-1][:200]})"
        raise ValueError(msg) from err
    cols = {c.upper(): c for c in (data.dtype.names or ())}
    for ra_name, dec_name in (("ALPHAWIN_J2000", "DELTAWIN_J2000"), ("ALPHA_J2000", "DELTA_J2000"), ("RA", "DEC")):
        if ra_name in cols and dec_name in cols:
            break
    else:
        msg = (f"{path}[{hdu_name}]: no position columns (ALPHAWIN_J2000/DELTAWIN_J2000, "
               "ALPHA_J2000/DELTA_J2000 or RA/DEC)")
        raise ValueError(msg)
    ra = np.asarray(data[cols[ra_name]], dtype=np.float64)
    dec = np.asarray(data[cols[dec_name]], dtype=np.float64)
    good = np.isfinite(ra) & np.isfinite(dec) & (np.abs(dec) <= 90)
    ra, dec = np.mod(ra[good], 360.0), dec[good]
    n_all = good.size
    number = (np.asarray(data[cols["NUMBER"]], dtype=np.int64)[good] if "NUMBER" in cols
              else np.arange(1, n_all + 1, dtype=np.int64)[good])
    flags = (np.asarray(data[cols["FLAGS"]], dtype=np.int64)[good] if "FLAGS" in cols
             else np.zeros(ra.size, dtype=np.int64))
    floats = {}
    for db_name, candidates in OBJECT_FLOAT_COLUMNS.items():
        arr = np.full(ra.size, np.nan)
        for cand in candidates:
            if cand in cols:
                col = np.asarray(data[cols[cand]], dtype=np.float64)
                arr = (col if col.ndim == 1 else col[:, 0])[good]
                break
        floats[db_name] = arr
    return ObjectColumns(number=number, ra=ra, dec=dec, hpx=healpix_index(ra, dec), flags=flags, floats=floats)


def cone_ranges(ra: float, dec: float, radius: float, order: int = HEALPIX_ORDER,
                max_pixels: int = 64) -> list[tuple[int, int]]:
    """Inclusive ranges of nested HEALPix indices (at ``order``) covering a cone.

    A coarser order is searched first, so that a large cone costs a few ranges; the cone is
    padded by two coarse pixels, so every object within ``radius`` falls in a range
    (candidates, to be cut by :func:`angular_distance`).

    Parameters
    ----------
    ra, dec, radius : float
        Centre and radius in degrees.
    """
    from astropy import units as u
    from astropy_healpix import HEALPix

    if not (radius > 0 and math.isfinite(radius)):
        msg = f"cone radius must be a positive number of degrees, got {radius}"
        raise ValueError(msg)
    if not (-90.0 <= dec <= 90.0):
        msg = f"cone centre dec={dec} is outside [-90, 90] degrees"
        raise ValueError(msg)
    k = order
    while k > 0:
        pix_deg = math.degrees(math.sqrt(4 * math.pi / (12 * 4**k)))
        if math.pi * (radius + 2 * pix_deg) ** 2 / pix_deg**2 <= max_pixels:
            break
        k -= 1
    hp = HEALPix(nside=2**k, order="nested")
    pad = 2 * hp.pixel_resolution.to_value(u.deg)
    search = min(radius + pad, 180.0)
    pix = np.unique(np.asarray(hp.cone_search_lonlat(ra * u.deg, dec * u.deg, radius=search * u.deg),
                               dtype=np.int64))
    shift = 2 * (order - k)
    ranges: list[tuple[int, int]] = []
    for p in pix.tolist():
        lo, hi = p << shift, ((p + 1) << shift) - 1
        if ranges and ranges[-1][1] + 1 == lo:
            ranges[-1] = (ranges[-1][0], hi)
        else:
            ranges.append((lo, hi))
    return ranges


def angular_distance(ra1: np.ndarray | float, dec1: np.ndarray | float, ra2: float, dec2: float) -> np.ndarray:
    """Great-circle distance in degrees (haversine; exact at small and large separations)."""
    r1, d1, r2, d2 = (np.radians(np.asarray(x, dtype=np.float64)) for x in (ra1, dec1, ra2, dec2))
    s = np.sin((d1 - d2) / 2) ** 2 + np.cos(d1) * np.cos(d2) * np.sin((r1 - r2) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(s, 0.0, 1.0))))
