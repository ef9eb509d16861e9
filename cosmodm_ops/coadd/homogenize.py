"""Stage ``homogenize``: each used image sky-subtracted and convolved to the band's Moffat target PSF.

Per image (:func:`run`, pure): the sky (median of the unmasked pixels) is subtracted, cell
kernels to the target are built, image and weight are convolved
(:func:`cosmodm_ops.coadd.psfhomog.homogenize`), and the PSF FWHM before and after is sampled
on a 3 x 3 grid. An image whose PSF is broader than the target anywhere on that grid cannot
be matched by a convolution: it stays in the plain coadd only (qa.json ``not_homogenized``).

:func:`homogenize_inputs` reads the images and writes the homogenized copies, uncompressed,
into the work folder for SWarp.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cosmodm_ops.coadd.imageio import read_image, write_plain
from cosmodm_ops.coadd.inputs import CoaddBadInput, CoaddInput
from cosmodm_ops.coadd.psf import ImagePSF, psf_samples
from cosmodm_ops.coadd.swarp import SwarpInput

__all__ = ["HomogenizedImage", "HomogenizedInputs", "homogenize_inputs", "robust_sky", "run"]

log = logging.getLogger(__name__)


@dataclass
class HomogenizedImage:
    """One image brought to the target PSF (or why not).

    Attributes
    ----------
    sky, sky_noise : float
        Median and 1.4826 MAD of the unmasked pixels (image units).
    samples : list of dict
        PSF FWHM before and after (arcsec) on a 3 x 3 grid (:func:`cosmodm_ops.coadd.psf.psf_samples`).
    image, weight : ndarray or None
        The homogenized image (sky subtracted) and weight; None when the PSF is broader than the target.
    reason : str or None
        Why the image was not homogenized.
    fwhm_max_arcsec : float
        The broadest sampled input FWHM.
    """

    sky: float
    sky_noise: float
    samples: list[dict[str, float]]
    image: np.ndarray | None = None
    weight: np.ndarray | None = None
    reason: str | None = None
    fwhm_max_arcsec: float = math.nan


@dataclass
class HomogenizedInputs:
    """The homogenize stage of a band: SWarp inputs, the images left out, PSF samples, skies.

    Attributes
    ----------
    swarp_inputs : list of SwarpInput
        The homogenized copies (in the work folder) with their flux scales.
    not_homogenized : list of dict
        ``{"name", "reason", "fwhm_max_arcsec"}``.
    samples : list of dict
        PSF samples of the homogenized images (with ``image``: the input's name).
    sky : dict int -> (float, float)
        Sky and sky noise of every used input, by input index.
    """

    swarp_inputs: list[SwarpInput] = field(default_factory=list)
    not_homogenized: list[dict[str, Any]] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    sky: dict[int, tuple[float, float]] = field(default_factory=dict)


def robust_sky(image: np.ndarray, good: np.ndarray) -> tuple[float, float]:
    """(median, 1.4826 MAD) of the finite ``good`` pixels (at most 400,000 of them, evenly spaced)."""
    vals = image[good]
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return 0.0, 0.0
    if vals.size > 400_000:
        vals = vals[:: vals.size // 400_000]
    med = float(np.median(vals))
    return med, float(1.4826 * np.median(np.abs(vals - med)))


def run(image: np.ndarray, weight: np.ndarray, psf: ImagePSF, target_arcsec: float, beta: float) -> HomogenizedImage:
    """Bring one image to a Moffat PSF of FWHM ``target_arcsec`` and index ``beta`` (inputs not modified).

    Parameters
    ----------
    image, weight : ndarray, shape (ny, nx)
        Science image and inverse-variance weight (0 or non-finite pixels are masked).
    psf : ImagePSF
    target_arcsec : float
    beta : float
    """
    from cosmodm_ops.coadd.psfhomog import cell_kernels, homogenize, moffat_psf

    good = (weight > 0) & np.isfinite(image)
    wt = np.where(good, weight, 0.0).astype(np.float32)
    sky, noise = robust_sky(image, good)
    tpx = target_arcsec / psf.scale
    target = moffat_psf(tpx, beta, 2 * math.ceil(4 * tpx) + 1)
    ny, nx = psf.shape
    cells = (max(1, round(ny / 256)), max(1, round(nx / 256)))
    kern = cell_kernels(psf.model, (ny, nx), target, cells)
    samples = psf_samples(psf.model, kern, psf.wcs, (ny, nx), psf.scale)
    broadest = max((s["before"] for s in samples), default=math.nan)
    if broadest > target_arcsec:
        # a convolution only broadens: this image cannot reach the target (plain coadd only)
        reason = (f"PSF FWHM up to {broadest:.3f}\" is broader than the homogenization target "
                  f"{target_arcsec:.3f}\": left out of the homogenized coadd")
        return HomogenizedImage(sky, noise, samples, reason=reason, fwhm_max_arcsec=broadest)
    h_img, h_wt = homogenize(np.where(good, image - sky, 0.0), wt, psf.model, target, cells=cells, kernels=kern)
    return HomogenizedImage(sky, noise, samples, h_img, h_wt, fwhm_max_arcsec=broadest)


def homogenize_inputs(inputs: Sequence[CoaddInput], psfs: dict[int, ImagePSF], fscale: np.ndarray,
                      target_arcsec: float, beta: float, work: Path, *, tile: str, band: str) -> HomogenizedInputs:
    """Homogenize every used input (``psfs``' keys) and write the copies into ``work`` for SWarp.

    Raises
    ------
    CoaddBadInput
        No input image has a PSF narrower than the target.
    """
    out = HomogenizedInputs()
    for i, psf in psfs.items():
        inp = inputs[i]
        img, hdr = read_image(inp.files["image"].path)
        wt, _ = read_image(inp.files["weight"].path)
        res = run(img, wt, psf, target_arcsec, beta)
        out.sky[i] = (res.sky, res.sky_noise)
        if res.image is None or res.weight is None:
            log.warning("coadd %s %s: image %s: %s", tile, band, inp.name, res.reason)
            out.not_homogenized.append({"name": inp.name, "reason": res.reason,
                                        "fwhm_max_arcsec": res.fwhm_max_arcsec})
            continue
        hi = write_plain(work / f"h_{inp.name}.fits", res.image, hdr)
        hw = write_plain(work / f"h_{inp.name}.weight.fits", res.weight, hdr)
        out.swarp_inputs.append(SwarpInput(hi, hw, float(fscale[i])))
        out.samples += [dict(s, image=inp.name) for s in res.samples]
    if not out.swarp_inputs:
        msg = (f"tile {tile} band {band}: no input image has a PSF narrower than the homogenization "
               f"target {target_arcsec:.3f}\" (coadd.psf_target_scale x the median FWHM)")
        raise CoaddBadInput(msg)
    return out
