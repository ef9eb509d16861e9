"""Relative calibration, inputs: calibration stars of each image, matched across images by position.

:func:`select_stars` (pure) picks the stars of one SExtractor catalog, :func:`read_star_measurements`
reads a catalog file first; :func:`match_stars` links detections closer than the matching
radius into stars (:class:`Detections`); :func:`star_groups` groups the detections by how many
images saw each star (the vectorised building block of the solver and the repeatability).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from cosmodm_ops.sky import chord, unit_vectors

__all__ = ["Detections", "PhotcalError", "StarMeasurements", "match_stars", "read_star_measurements",
           "select_stars", "star_groups"]


class PhotcalError(ValueError):
    """The calibration cannot be done with these inputs (too few stars or images, bad columns)."""


@dataclass(frozen=True)
class StarMeasurements:
    """The calibration stars measured on one image (CCD).

    Attributes
    ----------
    ra, dec : ndarray, shape (n,)
        Positions in degrees (ALPHAWIN_J2000, DELTAWIN_J2000).
    mag, magerr : ndarray, shape (n,)
        Instrumental magnitude and its 1-sigma error in mag (e.g. MAG_PSF, MAGERR_PSF).
    """

    ra: np.ndarray
    dec: np.ndarray
    mag: np.ndarray
    magerr: np.ndarray

    def __len__(self) -> int:
        return len(self.mag)


def select_stars(
    catalog: Mapping[str, Any],
    *,
    mag_col: str = "MAG_PSF",
    magerr_col: str | None = None,
    spread_model_max: float = 0.003,
    snr_min: float = 20.0,
    flags_max: int = 3,
) -> StarMeasurements:
    """Pick the calibration stars of one SExtractor catalog.

    Parameters
    ----------
    catalog : mapping of column name to array (a FITS_LDAC table, a dict, a structured array)
        Needs ``ALPHAWIN_J2000``, ``DELTAWIN_J2000``, ``SPREAD_MODEL``, ``mag_col`` and its
        error column; ``FLAGS`` is used when present.
    mag_col : str
        Magnitude column (``MAG_PSF`` or ``MAG_AUTO``).
    magerr_col : str, optional
        Error column; default ``MAGERR_<suffix of mag_col>``.
    spread_model_max : float
        Stars have ``|SPREAD_MODEL| < spread_model_max`` (``single_epoch.spread_model_star_max``).
    snr_min : float
        Minimum S/N, taken as ``1.0857 / magerr`` (``coadd.star_snr_min``).
    flags_max : int
        Keep ``FLAGS <= flags_max`` (1 = neighbours, 2 = blended are tolerated).

    Returns
    -------
    StarMeasurements
    """
    magerr_col = magerr_col or "MAGERR_" + mag_col.split("_", 1)[-1]
    needed = ("ALPHAWIN_J2000", "DELTAWIN_J2000", "SPREAD_MODEL", mag_col, magerr_col)
    names = (
        set(catalog.dtype.names) if hasattr(catalog, "dtype") and catalog.dtype.names else set(catalog.keys())
    )
    missing = [c for c in needed if c not in names]
    if missing:
        msg = f"star catalog lacks column(s) {missing}; run SExtractor pass 2 with these parameters"
        raise PhotcalError(msg)
    mag = np.asarray(catalog[mag_col], float)
    err = np.asarray(catalog[magerr_col], float)
    sm = np.asarray(catalog["SPREAD_MODEL"], float)
    ok = np.isfinite(mag) & np.isfinite(err) & (err > 0) & (mag < 90) & (np.abs(sm) < spread_model_max)
    ok &= 1.0857 / np.where(err > 0, err, np.inf) >= snr_min
    if "FLAGS" in names:
        ok &= np.asarray(catalog["FLAGS"]) <= flags_max
    return StarMeasurements(
        np.asarray(catalog["ALPHAWIN_J2000"], float)[ok],
        np.asarray(catalog["DELTAWIN_J2000"], float)[ok],
        mag[ok],
        err[ok],
    )


def read_star_measurements(
    path: str | Path,
    *,
    ext: str | int = "LDAC_OBJECTS",
    mag_col: str = "MAG_PSF",
    spread_model_max: float = 0.003,
    snr_min: float = 20.0,
) -> StarMeasurements:
    """Read one SExtractor catalog (FITS_LDAC by default) and select its calibration stars.

    The I/O wrapper of :func:`select_stars`; errors name the file and HDU.
    """
    import fitsio

    try:
        cat = fitsio.read(str(path), ext=ext)
    except OSError as err:
        msg = f"{path}[{ext}]: cannot read the star catalog ({err}); expected a SExtractor FITS_LDAC catalog"
        raise PhotcalError(msg) from err
    try:
        return select_stars(cat, mag_col=mag_col, spread_model_max=spread_model_max, snr_min=snr_min)
    except PhotcalError as err:
        msg = f"{path}[{ext}]: {err}"
        raise PhotcalError(msg) from err


@dataclass(frozen=True)
class Detections:
    """Star measurements of many images, flattened: detection ``k`` is star ``star[k]`` on image ``image[k]``.

    Attributes
    ----------
    image, star : ndarray of int, shape (n_det,)
        Image index in ``[0, n_images)`` and star index in ``[0, n_stars)``.
    mag, magerr : ndarray of float, shape (n_det,)
        Instrumental magnitude and error (mag).
    n_images, n_stars : int
    """

    image: np.ndarray
    star: np.ndarray
    mag: np.ndarray
    magerr: np.ndarray
    n_images: int
    n_stars: int

    def __post_init__(self) -> None:
        n = len(self.image)
        if not (len(self.star) == len(self.mag) == len(self.magerr) == n):
            msg = "Detections: image, star, mag and magerr must have the same length"
            raise PhotcalError(msg)


def match_stars(tables: Sequence[StarMeasurements], radius_arcsec: float = 1.0) -> Detections:
    """Match stars across images by position.

    Detections closer than ``radius_arcsec`` are linked (a k-d tree on unit vectors) and
    each connected group is one star. Groups seen on one image only are kept (they carry
    no calibration information; the solver ignores them).

    Parameters
    ----------
    tables : sequence of StarMeasurements
        One table per image; the position in the sequence is the image index.
    radius_arcsec : float
        Matching radius (``coadd.match_radius_arcsec``).
    """
    sizes = np.array([len(t) for t in tables], dtype=np.int64)
    if sizes.sum() == 0:
        msg = "no calibration stars in any image: check the S/N and SPREAD_MODEL cuts"
        raise PhotcalError(msg)
    xyz = unit_vectors(np.concatenate([t.ra for t in tables]), np.concatenate([t.dec for t in tables]))
    pairs = cKDTree(xyz).query_pairs(chord(radius_arcsec), output_type="ndarray")
    n = len(xyz)
    graph = sp.coo_matrix((np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    n_stars, labels = connected_components(graph, directed=False)
    image = np.repeat(np.arange(len(tables), dtype=np.int32), sizes)
    return Detections(
        image=image,
        star=labels.astype(np.int64),
        mag=np.concatenate([t.mag for t in tables]).astype(float),
        magerr=np.concatenate([t.magerr for t in tables]).astype(float),
        n_images=len(tables),
        n_stars=int(n_stars),
    )


def star_groups(star: np.ndarray, n_stars: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(stars, det)`` per multiplicity n >= 2: ``det`` (k, n) holds the detection indices of k stars."""
    counts = np.bincount(star, minlength=n_stars)
    if np.all(star[1:] >= star[:-1]):
        order = np.arange(len(star))
    else:
        order = np.argsort(star)  # order within a star does not matter: the fast unstable sort
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    for n in np.unique(counts[counts >= 2]):
        sel = np.flatnonzero(counts == n)
        yield sel, order[starts[sel][:, None] + np.arange(n)]
