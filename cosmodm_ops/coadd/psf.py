"""Stage ``psf``: each used image's PSFEx model, its FWHM at the image centre, and the band's Moffat target.

- :func:`measure` (pure): the FWHM (arcsec) of a model at the centre of an image;
- :func:`target_fwhm` (pure): ``coadd.psf_target_scale`` x the median input FWHM;
- :func:`psf_samples` (pure): the FWHM before and after homogenization on a grid of positions;
- :func:`read` (I/O): header, WCS and PSFEx model of each used input; an image whose model is
  unusable is left out of both coadds (its removal recorded in the relative zeropoints).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cosmodm_ops.coadd.imageio import image_hdu_header, pixel_scale, wcs_of
from cosmodm_ops.coadd.inputs import CoaddBadInput, CoaddInput
from cosmodm_ops.coadd.zeropoints import RelativeZeropoints

__all__ = ["ImagePSF", "measure", "psf_samples", "read", "target_fwhm"]

log = logging.getLogger(__name__)


@dataclass
class ImagePSF:
    """The PSF of one input image.

    Attributes
    ----------
    wcs : astropy.wcs.WCS
    shape : (int, int)
        Image shape (ny, nx), pixels.
    model : PSFExModel
    scale : float
        Pixel scale, arcsec.
    fwhm : float
        FWHM at the image centre, arcsec.
    """

    wcs: Any
    shape: tuple[int, int]
    model: Any
    scale: float
    fwhm: float


def measure(model: Any, wcs: Any, shape: tuple[int, int]) -> ImagePSF:
    """The PSF of an image from its PSFEx model, WCS and shape (ny, nx).

    Raises
    ------
    PSFHomogError
        The model cannot be evaluated or its FWHM measured.
    """
    from cosmodm_ops.coadd.psfhomog import psf_at, psf_fwhm

    ny, nx = shape
    scale = pixel_scale(wcs)
    fw = psf_fwhm(psf_at(model, (nx + 1) / 2.0, (ny + 1) / 2.0)) * scale
    return ImagePSF(wcs=wcs, shape=(ny, nx), model=model, scale=scale, fwhm=fw)


def target_fwhm(psfs: Sequence[ImagePSF], psf_target_scale: float) -> float:
    """The band's target Moffat FWHM (arcsec): ``psf_target_scale`` x the median input FWHM."""
    return float(psf_target_scale * np.median([p.fwhm for p in psfs]))


def psf_samples(model: Any, kern: Any, wcs: Any, shape: tuple[int, int], scale: float,
                grid: int = 3) -> list[dict[str, float]]:
    """PSF FWHM (arcsec) before and after homogenization on a grid x grid of positions of one image.

    Parameters
    ----------
    model : PSFExModel
    kern : CellKernels
        The image's matching kernels (:func:`cosmodm_ops.coadd.psfhomog.cell_kernels`).
    wcs : astropy.wcs.WCS
    shape : (int, int)
        (ny, nx), pixels.
    scale : float
        Pixel scale, arcsec.

    Returns
    -------
    list of dict
        ``{"ra", "dec", "before", "after"}`` (deg, deg, arcsec, arcsec); positions where the model
        cannot be measured are left out.
    """
    from scipy.signal import fftconvolve

    from cosmodm_ops.coadd.psfhomog import PSFHomogError, psf_at, psf_fwhm

    ny, nx = shape
    out = []
    for gy in range(grid):
        for gx in range(grid):
            x0 = (gx + 0.5) * nx / grid  # 0-based pixel position
            y0 = (gy + 0.5) * ny / grid
            iy = min(int(np.searchsorted(kern.edges_y, y0, side="right")) - 1, kern.kernels.shape[0] - 1)
            ix = min(int(np.searchsorted(kern.edges_x, x0, side="right")) - 1, kern.kernels.shape[1] - 1)
            try:
                stamp = psf_at(model, x0 + 1.0, y0 + 1.0)
                before = psf_fwhm(stamp)
                after = psf_fwhm(fftconvolve(stamp, kern.kernels[iy, ix], mode="full"))
            except PSFHomogError:
                continue
            ra, dec = wcs.all_pix2world([x0], [y0], 0)
            out.append({"ra": float(ra[0]), "dec": float(dec[0]), "before": before * scale, "after": after * scale})
    return out


def read(inputs: Sequence[CoaddInput], zps: RelativeZeropoints, *, tile: str, band: str) -> dict[int, ImagePSF]:
    """The PSF of every image still used, by input index; images with an unusable model are removed from ``zps``.

    Raises
    ------
    CoaddBadInput
        No image has a usable PSF model.
    """
    from cosmodm_ops.coadd.psfhomog import PSFHomogError, read_psfex

    out: dict[int, ImagePSF] = {}
    for i in zps.used:
        inp = inputs[i]
        hdr = image_hdu_header(inp.files["image"].path)
        w = wcs_of(hdr)
        try:
            out[i] = measure(read_psfex(inp.files["psf"].path), w, (int(hdr["NAXIS2"]), int(hdr["NAXIS1"])))
        except PSFHomogError as err:  # this image cannot be homogenized: leave it out of both coadds
            reason = f"PSF model unusable: {err}"
            log.warning("coadd %s %s: image %s removed: %s", tile, band, inp.name, reason)
            zps.remove(i, inp.name, reason)
    if not out:
        msg = f"tile {tile} band {band}: no input image has a usable PSF model"
        raise CoaddBadInput(msg)
    return out
