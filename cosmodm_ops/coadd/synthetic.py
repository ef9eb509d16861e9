"""Seeded synthetic-data factories for the coadd science (tests, benchmarks, notebooks).

Each factory returns the data and the truth it was drawn from, so results can be
checked against the truth: :func:`photcal_tile` (a tile's CCD images sharing stars),
:func:`photcal_survey` (an ubercal-like survey of overlapping images),
:func:`locus_stars` (stars on the stellar locus with band offsets) and
:func:`psf_field_image` (stars with a PSF that varies over the image).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cosmodm_ops.coadd.photcal import Detections, StarMeasurements

__all__ = [
    "PhotcalTruth",
    "locus_stars",
    "mag_error",
    "moffat_image",
    "photcal_crlb_ratio",
    "photcal_survey",
    "photcal_tables",
    "photcal_tile",
    "psf_field_image",
    "psfex_like_model",
]


def mag_error(mag: np.ndarray, m10: float = 22.0) -> np.ndarray:
    """Magnitude error of a sky-limited CCD measurement (mag): 0.1 mag (S/N 10) at ``m10``,
    about 2.4 mmag at ``m10 - 5`` (source noise) and 18 mmag at ``m10 - 2``."""
    x = 10.0 ** (0.4 * (np.asarray(mag) - m10))
    return 0.1 * np.sqrt(0.05 * x + 0.95 * x * x)


@dataclass(frozen=True)
class PhotcalTruth:
    """Truth of a synthetic calibration set.

    Attributes
    ----------
    zeropoints : ndarray, shape (n_images,)
        True ``zp`` (``m_cal = m_inst + zp``), mean zero.
    star_mag : ndarray, shape (n_stars,)
    star_ra, star_dec : ndarray, shape (n_stars,)
        Degrees (tile only).
    sigma : ndarray, shape (n_det,)
        The total noise actually drawn per detection (mag).
    """

    zeropoints: np.ndarray
    star_mag: np.ndarray
    star_ra: np.ndarray
    star_dec: np.ndarray
    sigma: np.ndarray


def photcal_tile(
    n_images: int = 300,
    stars_per_image: float = 600.0,
    *,
    ccd_deg: tuple[float, float] = (0.15, 0.3),
    field_deg: float = 1.0,
    mag_range: tuple[float, float] = (16.0, 21.0),
    zp_sigma: float = 0.05,
    floor_mag: float = 0.0,
    bad_images: dict[int, float] | None = None,
    nongrey_images: dict[int, float] | None = None,
    ra0: float = 30.0,
    dec0: float = 0.0,
    seed: int = 0,
    noise_seed: int | None = None,
) -> tuple[Detections, PhotcalTruth]:
    """CCD images dithered over a tile, all seeing the same stars.

    Images are ``ccd_deg`` rectangles at random positions inside a ``field_deg`` square;
    the star density gives ``stars_per_image`` stars per image on average.
    ``m_inst = M - zp + N(0, magerr^2 + floor^2)``; images in ``bad_images`` get extra
    Gaussian scatter of the given size (mag); images in ``nongrey_images`` a colour term
    (mag per mag of ``g-i`` colour, stars' colours uniform in 0.3-3.0), a non-grey error.
    ``seed`` fixes the design (stars, images, zeropoints); ``noise_seed`` (default: the
    same stream) the measurement noise, so many noise realizations of one design can be drawn.
    """
    rng = np.random.default_rng(seed)
    w, h = ccd_deg
    density = stars_per_image / (w * h)
    n_stars = rng.poisson(density * field_deg**2)
    x = rng.uniform(0, field_deg, n_stars)
    y = rng.uniform(0, field_deg, n_stars)
    mag = rng.uniform(*mag_range, n_stars)
    x0 = rng.uniform(0, field_deg - w, n_images)
    y0 = rng.uniform(0, field_deg - h, n_images)
    zp = rng.normal(0.0, zp_sigma, n_images)
    zp -= zp.mean()
    # stars in each image: sort stars by x and use searchsorted (no n_images x n_stars array)
    order = np.argsort(x)
    xs = x[order]
    img_parts, star_parts = [], []
    for k in range(n_images):
        lo, hi = np.searchsorted(xs, [x0[k], x0[k] + w])
        cand = order[lo:hi]
        cand = cand[(y[cand] >= y0[k]) & (y[cand] < y0[k] + h)]
        img_parts.append(np.full(len(cand), k, np.int32))
        star_parts.append(cand)
    image = np.concatenate(img_parts)
    star = np.concatenate(star_parts).astype(np.int64)
    err = mag_error(mag[star])
    sigma = np.sqrt(err**2 + floor_mag**2)
    if bad_images:
        for k, extra in bad_images.items():
            sel = image == k
            sigma[sel] = np.sqrt(sigma[sel] ** 2 + extra**2)
    noise_rng = rng if noise_seed is None else np.random.default_rng([seed, noise_seed])
    colour = rng.uniform(0.3, 3.0, n_stars)
    offset = np.zeros(len(star))
    for k, coeff in (nongrey_images or {}).items():
        sel = image == k
        offset[sel] = coeff * (colour[star[sel]] - 1.0)
    minst = mag[star] - zp[image] + offset + noise_rng.normal(0.0, 1.0, len(star)) * sigma
    cosd = np.cos(np.radians(dec0))
    det = Detections(image, star, minst, err, n_images, n_stars)
    truth = PhotcalTruth(zp, mag, ra0 + (x - field_deg / 2) / cosd, dec0 + (y - field_deg / 2), sigma)
    return det, truth


def photcal_crlb_ratio(n_realizations: int = 200, *, seed: int = 0, **design: object) -> tuple[float, float]:
    """Monte-Carlo check of the zeropoint solver against the Cramer-Rao bound.

    Draws ``n_realizations`` noise realizations of one :func:`photcal_tile` design (mean
    gauge), solves each, and compares the mean squared zeropoint error over images and
    realizations with the trace of the bound.

    Returns
    -------
    ratio : float
        ``sqrt(mean squared error / mean CRLB variance)``: 1 for an efficient estimator.
    crlb_rms : float
        ``sqrt(mean CRLB variance)`` in mag.
    """
    from cosmodm_ops.coadd.photcal import crlb_covariance, solve_zeropoints

    det0, truth = photcal_tile(seed=seed, noise_seed=0, **design)  # type: ignore[arg-type]
    cov = crlb_covariance(det0, gauge="mean")
    good = np.isfinite(np.diag(cov))
    sq = np.zeros(det0.n_images)
    for r in range(n_realizations):
        det, _ = photcal_tile(seed=seed, noise_seed=r + 1, **design)  # type: ignore[arg-type]
        zp, _ = solve_zeropoints(det, gauge="mean", errors=False)
        sq += (zp - truth.zeropoints) ** 2
    mse = float(np.mean(sq[good]) / n_realizations)
    crlb = float(np.mean(np.diag(cov)[good]))
    return float(np.sqrt(mse / crlb)), float(np.sqrt(crlb))


def photcal_tables(
    det: Detections, truth: PhotcalTruth, jitter_arcsec: float = 0.05, seed: int = 1
) -> list[StarMeasurements]:
    """Per-image star tables (positions with astrometric jitter) from a synthetic tile, for matching."""
    rng = np.random.default_rng(seed)
    tables = []
    order = np.argsort(det.image, kind="stable")
    bounds = np.searchsorted(det.image[order], np.arange(det.n_images + 1))
    cosd = np.cos(np.radians(truth.star_dec))
    for k in range(det.n_images):
        sel = order[bounds[k] : bounds[k + 1]]
        s = det.star[sel]
        j = rng.normal(0.0, jitter_arcsec / 3600.0, (2, len(s)))
        tables.append(
            StarMeasurements(
                truth.star_ra[s] + j[0] / cosd[s], truth.star_dec[s] + j[1], det.mag[sel], det.magerr[sel]
            )
        )
    return tables


def photcal_survey(
    n_images: int = 100_000,
    stars_per_image: float = 60.0,
    *,
    passes: int = 3,
    zp_sigma: float = 0.05,
    mag_range: tuple[float, float] = (16.0, 21.0),
    seed: int = 0,
) -> tuple[Detections, np.ndarray]:
    """An ubercal-like survey: ``passes`` grids of square images, offset by fractions of an image.

    Pass ``p`` covers the plane with unit cells shifted by ``(p/passes, p*golden mod 1)``;
    each star lies in one image of every pass that covers it, so a star is seen up to
    ``passes`` times and the images form one connected 2-D network. Built vectorised.

    Returns
    -------
    det : Detections
        Sorted by star.
    zp_true : ndarray, shape (n_images,)
    """
    rng = np.random.default_rng(seed)
    side = int(np.ceil(np.sqrt(n_images / passes)))  # at least n_images images in all
    n_img = side * side * passes
    area = float(side * side)
    n_stars = rng.poisson(stars_per_image * area)
    x = rng.uniform(0, side, n_stars)
    y = rng.uniform(0, side, n_stars)
    mag = rng.uniform(*mag_range, n_stars)
    zp = rng.normal(0.0, zp_sigma, n_img)
    zp -= zp.mean()
    imgs = np.full((n_stars, passes), -1, np.int64)
    golden = (np.sqrt(5.0) - 1.0) / 2.0
    for p in range(passes):
        ox, oy = p / passes, (p * golden) % 1.0
        ix = np.floor(x - ox).astype(np.int64)
        iy = np.floor(y - oy).astype(np.int64)
        inside = (ix >= 0) & (ix < side) & (iy >= 0) & (iy < side)
        imgs[inside, p] = p * side * side + iy[inside] * side + ix[inside]
    star = np.repeat(np.arange(n_stars), passes)
    image = imgs.ravel()
    keep = image >= 0
    star, image = star[keep], image[keep]
    err = mag_error(mag[star])
    minst = mag[star] - zp[image] + rng.normal(0.0, 1.0, len(star)) * err
    return Detections(image.astype(np.int32), star, minst, err, n_img, n_stars), zp


def moffat_image(shape: tuple[int, int], x0: float, y0: float, fwhm: float, beta: float) -> np.ndarray:
    """A unit-flux Moffat profile sampled at pixel centres (0-based ``x0``, ``y0``; FWHM in pixels)."""
    alpha = fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    r2 = ((xx - x0) ** 2 + (yy - y0) ** 2) / alpha**2
    img = (1.0 + r2) ** (-beta)
    return img / img.sum()


def psf_field_image(
    shape: tuple[int, int],
    psf: Callable[[float, float], np.ndarray],
    *,
    spacing: int = 64,
    flux: float = 1e5,
    margin: int = 40,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stars on a regular grid, each rendered with ``psf(x, y)`` (an odd-sized unit-flux stamp centred on the star).

    Parameters
    ----------
    shape : (ny, nx)
    psf : callable (x, y) -> 2-D array
        0-based pixel position of the star -> its PSF stamp.
    spacing, margin : int
        Pixels between stars and from the edges.
    flux : float
        Star flux (counts).

    Returns
    -------
    image : ndarray, shape ``shape``, float32
    xs, ys : ndarray
        0-based star positions (integer pixel centres).
    """
    ny, nx = shape
    img = np.zeros(shape, np.float64)
    ys, xs = np.mgrid[margin : ny - margin + 1 : spacing, margin : nx - margin + 1 : spacing]
    xs, ys = xs.ravel(), ys.ravel()
    for x, y in zip(xs, ys, strict=True):
        stamp = psf(float(x), float(y))
        hy, hx = stamp.shape[0] // 2, stamp.shape[1] // 2
        y1, y2, x1, x2 = y - hy, y + hy + 1, x - hx, x + hx + 1
        sy1, sx1 = max(0, -y1), max(0, -x1)
        sy2 = stamp.shape[0] - max(0, y2 - ny)
        sx2 = stamp.shape[1] - max(0, x2 - nx)
        img[max(y1, 0) : min(y2, ny), max(x1, 0) : min(x2, nx)] += flux * stamp[sy1:sy2, sx1:sx2]
    return img.astype(np.float32), xs, ys


def locus_stars(
    n: int = 2000,
    offsets: dict[str, float] | None = None,
    *,
    noise: float = 0.02,
    intrinsic: float = 0.02,
    j_noise: float = 0.03,
    j_fraction: float = 0.6,
    gi_range: tuple[float, float] = (0.4, 3.2),
    locus: object | None = None,
    seed: int = 0,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, float]]:
    """Stars drawn from the stellar locus, observed with zeropoint errors.

    Colours come from the locus at g-i uniform in ``gi_range``; each band gets intrinsic
    scatter and measurement noise; the observed magnitudes are ``m_true - offsets[b]``, so
    the correction that :func:`cosmodm_ops.coadd.locus.fit_locus` should find is
    ``offsets``. J (absolute, 2MASS-like) is given for a random ``j_fraction`` of the stars.

    Returns
    -------
    mags, errs : dict band -> ndarray
        ``g r i z J`` magnitudes (J NaN where missing) and errors.
    offsets : dict band -> float
        The truth (mag).
    """
    from cosmodm_ops.coadd.locus import Locus, read_covey_locus

    loc = locus if isinstance(locus, Locus) else read_covey_locus()
    rng = np.random.default_rng(seed)
    off = offsets if offsets is not None else {"g": 0.12, "r": -0.07, "i": 0.05, "z": 0.1}
    gi = rng.uniform(*gi_range, n)
    c = loc.at_gi(gi)
    r = rng.uniform(16.0, 20.0, n)
    true = {"r": r, "g": r + c["g-r"], "i": r - c["r-i"]}
    true["z"] = true["i"] - c["i-z"]
    true["J"] = r - c["r-J"]
    mags, errs = {}, {}
    for b in ("g", "r", "i", "z"):
        mags[b] = true[b] + rng.normal(0, intrinsic, n) + rng.normal(0, noise, n) - off.get(b, 0.0)
        errs[b] = np.full(n, noise)
    jm = true["J"] + rng.normal(0, j_noise, n)
    jm[rng.uniform(size=n) > j_fraction] = np.nan
    mags["J"] = jm
    errs["J"] = np.full(n, j_noise)
    return mags, errs, dict(off)


def psfex_like_model(
    shape: tuple[int, int] = (4096, 2048),
    fwhm_range: tuple[float, float] = (3.8, 4.6),
    *,
    beta: float = 3.0,
    size: int = 35,
    samp: float = 1.0,
) -> object:
    """A PSFEx-format model whose FWHM grows linearly from one image corner to the opposite one.

    Degree-1 terms in X and Y of a degree-2 basis blend two Moffats of FWHM
    ``fwhm_range`` (pixels): ``P = (M1 + M2)/2 + (X + Y)(M2 - M1)/2`` with X, Y in
    [-1/2, 1/2] over the image (so P = M1 at pixel (1, 1) and M2 at the far corner).
    """
    from cosmodm_ops.coadd.psfhomog import PSFExModel

    m1 = moffat_image((size, size), size // 2, size // 2, fwhm_range[0] / samp, beta)
    m2 = moffat_image((size, size), size // 2, size // 2, fwhm_range[1] / samp, beta)
    basis = np.zeros((6, size, size))
    basis[0] = 0.5 * (m1 + m2)
    basis[1] = 0.5 * (m2 - m1)  # X
    basis[3] = 0.5 * (m2 - m1)  # Y
    ny, nx = shape
    return PSFExModel(
        basis, ((nx + 1) / 2.0, (ny + 1) / 2.0), (float(nx - 1), float(ny - 1)), 2, samp, source="synthetic"
    )
