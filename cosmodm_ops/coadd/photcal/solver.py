"""Relative calibration, the linear system: the zeropoint normal equations with the stars eliminated, and their solution.

:func:`build_system` assembles the Schur complement ``S zp = b`` (vectorised ``bincount``, one
COO matrix; dense duplicate summing up to 4000 images); :func:`solve_zeropoints` solves one
tile's images with errors (the Cramer-Rao bound, :func:`crlb_covariance`); :func:`solve_survey`
solves survey-wide systems with conjugate gradients. See :mod:`cosmodm_ops.coadd.photcal` for
the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.sparse as sp
import scipy.sparse.linalg as spla
from scipy.sparse.csgraph import connected_components

from cosmodm_ops.coadd.photcal.matching import Detections, PhotcalError, star_groups

__all__ = ["NormalSystem", "build_system", "crlb_covariance", "solve", "solve_survey", "solve_zeropoints"]

#: Up to this many images the normal matrix is summed densely (n^2 float64: 128 MB at 4000).
_DENSE_BUILD_LIMIT = 4000


@dataclass(frozen=True)
class NormalSystem:
    """The zeropoint normal system of a set of detections (:func:`build_system`)."""

    matrix: sp.csr_matrix  # S, (n_images, n_images)
    rhs: np.ndarray  # b, (n_images,)
    det: Detections  # the detections used (active images, stars seen >= 2 times)
    weight: np.ndarray  # per used detection
    star_mean: np.ndarray  # Mbar per star (instrumental)
    star_weight: np.ndarray  # D per star
    n_per_image: np.ndarray  # used detections per image


def build_system(det: Detections, active: np.ndarray | None = None, floor_mag: float = 0.0) -> NormalSystem:
    """Assemble the zeropoint normal system ``S zp = b`` with the stars eliminated.

    Parameters
    ----------
    det : Detections
    active : ndarray of bool, shape (n_images,), optional
        Images to use (default all).
    floor_mag : float
        Added in quadrature to every ``magerr`` (mag) for the weights.

    Returns
    -------
    NormalSystem
        ``matrix`` (CSR, n_images x n_images), ``rhs`` and the per-star sums; rows of
        inactive images are empty.
    """
    keep = np.isfinite(det.mag) & np.isfinite(det.magerr) & (det.magerr > 0)
    if active is not None:
        keep &= np.asarray(active, bool)[det.image]
    counts = np.bincount(det.star[keep], minlength=det.n_stars)
    keep &= counts[det.star] >= 2
    idx = np.flatnonzero(keep)
    # compact star numbering (stars seen at least twice), preserving order
    used = counts >= 2
    remap = np.cumsum(used) - 1
    star = remap[det.star[idx]]
    n_stars = int(used.sum())
    image = det.image[idx].astype(np.int64)
    mag = det.mag[idx]
    err = det.magerr[idx]
    w = 1.0 / (err * err + floor_mag * floor_mag)
    n_img = det.n_images
    d = np.bincount(star, w, minlength=n_stars)
    mbar = np.bincount(star, w * mag, minlength=n_stars) / np.where(d > 0, d, 1.0)
    a = np.bincount(image, w, minlength=n_img)
    rhs = np.bincount(image, w * (mbar[star] - mag), minlength=n_img)
    dense_path = n_img <= _DENSE_BUILD_LIMIT
    diag = np.arange(n_img, dtype=np.int32)
    image32 = image.astype(np.int32)
    rows: list[np.ndarray] = [diag * np.int32(n_img + 1) if dense_path else diag]  # dense path: flat keys
    cols: list[np.ndarray] = [diag]
    vals: list[np.ndarray] = [a]
    for sel, grp in star_groups(star, n_stars):
        ig = image32[grp]
        k, n = grp.shape
        ug = w[grp] / np.sqrt(d[sel])[:, None]
        vals.append((ug[:, :, None] * -ug[:, None, :]).ravel())
        if dense_path:
            rows.append((ig[:, :, None] * np.int32(n_img) + ig[:, None, :]).ravel())
        else:
            rows.append(np.broadcast_to(ig[:, :, None], (k, n, n)).ravel())
            cols.append(np.broadcast_to(ig[:, None, :], (k, n, n)).ravel())
    val = np.concatenate(vals)
    del vals
    if dense_path:
        # small systems (a tile): sum duplicates with one dense bincount (no sorting)
        dense = np.bincount(np.concatenate(rows), val, minlength=n_img * n_img).reshape(n_img, n_img)
        matrix = sp.csr_matrix(dense)
    else:
        row = np.concatenate(rows)
        del rows
        col = np.concatenate(cols)
        del cols
        matrix = sp.coo_matrix((val, (row, col)), shape=(n_img, n_img)).tocsr()
        del row, col
    del val
    sub = Detections(image, star, mag, err, n_img, n_stars)
    return NormalSystem(matrix, rhs, sub, w, mbar, d, np.bincount(image, minlength=n_img))


def _components(system: NormalSystem) -> tuple[int, np.ndarray]:
    """Connected groups of images (images linked by shared stars); images without stars get -1."""
    n_comp, labels = connected_components(system.matrix, directed=False)
    labels = labels.astype(np.int64)
    labels[system.n_per_image == 0] = -1
    return n_comp, labels


def _gauge_references(labels: np.ndarray, gauge: int | str, weight: np.ndarray) -> np.ndarray:
    """One held image per connected group: ``gauge`` itself in its group, the best-measured image elsewhere."""
    refs = []
    for comp in np.unique(labels[labels >= 0]):
        members = np.flatnonzero(labels == comp)
        if isinstance(gauge, (int, np.integer)) and labels[int(gauge)] == comp:
            refs.append(int(gauge))
        else:
            refs.append(int(members[np.argmax(weight[members])]))
    return np.array(refs, dtype=np.int64)


def _solve_spd(matrix: sp.csr_matrix, rhs: np.ndarray, direct_limit: int, rtol: float) -> np.ndarray:
    n = matrix.shape[0]
    if n == 0:
        return np.zeros(0)
    if n <= _DENSE_BUILD_LIMIT and n <= max(direct_limit, 1) and direct_limit > 0:
        return scipy.linalg.solve(matrix.toarray(), rhs, assume_a="pos", check_finite=False)
    if n <= direct_limit:
        lu = spla.splu(matrix.tocsc(), permc_spec="MMD_AT_PLUS_A")
        return lu.solve(rhs)
    diag = matrix.diagonal()
    precond = spla.LinearOperator((n, n), matvec=lambda v: v / diag, dtype=float)
    sol, info = spla.cg(matrix, rhs, rtol=rtol, atol=0.0, maxiter=20 * n, M=precond)
    if info != 0:
        msg = f"conjugate gradients did not converge ({info} iterations); the image graph may be badly linked"
        raise PhotcalError(msg)
    return sol


def solve(
    system: NormalSystem, gauge: int | str, direct_limit: int = 20000, rtol: float = 1e-10
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Zeropoints (NaN for images without stars), the free-image mask and component labels."""
    n_img = system.det.n_images
    _, labels = _components(system)
    refs = _gauge_references(labels, gauge, system.matrix.diagonal())
    free = labels >= 0
    free[refs] = False
    fidx = np.flatnonzero(free)
    sub = system.matrix[fidx][:, fidx]
    zp = np.full(n_img, np.nan)
    zp[labels >= 0] = 0.0
    zp[fidx] = _solve_spd(sub, system.rhs[fidx], direct_limit, rtol)
    if gauge == "mean":
        for comp in np.unique(labels[labels >= 0]):
            m = labels == comp
            zp[m] -= zp[m].mean()
    return zp, free, labels


def crlb_covariance(
    det: Detections, gauge: int | str = 0, active: np.ndarray | None = None, floor_mag: float = 0.0
) -> np.ndarray:
    """The Cramer-Rao bound: covariance (mag^2) of the zeropoints for this design and noise.

    The Fisher information of the zeropoints with the star magnitudes as nuisance
    parameters is the Schur complement ``S``; with the gauge fixed (image ``gauge`` held at
    zero, or the mean held at zero with ``gauge='mean'``) its inverse bounds the
    covariance of any unbiased estimator. Dense: use for up to a few thousand images.

    Returns
    -------
    ndarray, shape (n_images, n_images)
        NaN rows and columns for images without matched stars.
    """
    return _crlb_from_system(build_system(det, active, floor_mag), gauge)


def _crlb_from_system(system: NormalSystem, gauge: int | str) -> np.ndarray:
    _, labels = _components(system)
    refs = _gauge_references(labels, gauge, system.matrix.diagonal())
    free = labels >= 0
    free[refs] = False
    fidx = np.flatnonzero(free)
    n = system.det.n_images
    cov = np.full((n, n), np.nan)
    good = np.flatnonzero(labels >= 0)
    cov[np.ix_(good, good)] = 0.0
    fisher = system.matrix[fidx][:, fidx].toarray()
    cov[np.ix_(fidx, fidx)] = np.linalg.inv(fisher)
    if gauge == "mean":
        for comp in np.unique(labels[labels >= 0]):
            members = np.flatnonzero(labels == comp)
            k = len(members)
            proj = np.eye(k) - 1.0 / k
            cov[np.ix_(members, members)] = proj @ cov[np.ix_(members, members)] @ proj
    return cov


def solve_zeropoints(
    det: Detections,
    *,
    gauge: int | str = "mean",
    active: np.ndarray | None = None,
    floor_mag: float = 0.0,
    errors: bool = True,
    dense_limit: int = 3000,
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least-squares zeropoints of one set of images.

    Parameters
    ----------
    det : Detections
    gauge : int or 'mean'
        Hold this image's zeropoint at 0, or the mean zeropoint (per connected group).
    active : ndarray of bool, optional
        Images to use; the others get NaN.
    floor_mag : float
        Systematic error added in quadrature to ``magerr`` for the weights (mag).
    errors : bool
        Also return 1-sigma errors: exact (the Cramer-Rao bound) up to ``dense_limit``
        images, else ``1/sqrt(S_ii)``, the error with every other image fixed (a lower bound).

    Returns
    -------
    zp, zp_err : ndarray, shape (n_images,)
        Zeropoints in mag (``m_cal = m_inst + zp``) and their errors (NaN where unknown).
    """
    system = build_system(det, active, floor_mag)
    zp, _, labels = solve(system, gauge)
    err = np.full(det.n_images, np.nan)
    if errors:
        if det.n_images <= dense_limit:
            cov = _crlb_from_system(system, gauge)
            err = np.sqrt(np.clip(np.diag(cov), 0.0, None))
        else:
            diag = system.matrix.diagonal()
            err = np.where(labels >= 0, 1.0 / np.sqrt(np.where(diag > 0, diag, np.inf)), np.nan)
        err[labels < 0] = np.nan
    return zp, err


def solve_survey(
    image: np.ndarray,
    star: np.ndarray,
    mag: np.ndarray,
    magerr: np.ndarray,
    n_images: int | None = None,
    *,
    gauge: int | str = "mean",
    floor_mag: float = 0.0,
    rtol: float = 1e-10,
) -> np.ndarray:
    """Survey-wide zeropoints (ubercal-like) for up to ~10^5-10^6 images.

    The same estimator as :func:`solve_zeropoints` for star identifications made
    beforehand (e.g. by a survey-wide match), solved with conjugate gradients; no error
    estimates. Memory grows as ``sum over stars of n_s^2`` for stars seen ``n_s`` times.

    Parameters
    ----------
    image, star : ndarray of int, shape (n_det,)
    mag, magerr : ndarray of float, shape (n_det,)
    n_images : int, optional
        Default ``image.max() + 1``.

    Returns
    -------
    ndarray, shape (n_images,)
        Zeropoints in mag (NaN for images without shared stars).
    """
    image = np.asarray(image)
    star = np.asarray(star)
    n_img = int(n_images if n_images is not None else image.max() + 1)
    det = Detections(
        image, star, np.asarray(mag, float), np.asarray(magerr, float), n_img, int(star.max()) + 1
    )
    system = build_system(det, None, floor_mag)
    zp, _, _ = solve(system, gauge, direct_limit=0, rtol=rtol)
    return zp
