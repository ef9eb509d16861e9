"""Stages ``swarp`` and ``swarp_homog``: the band's two coadds, and the coverage of the plain one.

- the plain coadd from the archived images (each image's sky given to SWarp as its manual
  background; flux scales ``10^(0.4 (magzero - 25 - zp_i))``: the single-epoch catalogs carry
  magnitudes on a zeropoint of 25 for one electron);
- the homogenized coadd from the convolved copies (:mod:`cosmodm_ops.coadd.homogenize`),
  with the target PSF in its header (``PSF_FWHM``, ``PSF_BETA``).

Both RICE-compressed into the output folder with ``MAGZERO``, ``BAND``, ``TILENAME`` and
``NIMAGES``. SWarp is an outside program that works on files, so this stage has no in-memory
``run`` of its own: its pure parts are :func:`header_keywords`, :func:`product_paths` and
:func:`coverage_fraction` (the fraction of the tile with weight > 0); the resampling maths is
SWarp's, the flux scales are :meth:`cosmodm_ops.coadd.zeropoints.RelativeZeropoints.flux_scales`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cosmodm_ops.coadd.imageio import compress_from
from cosmodm_ops.coadd.inputs import CoaddBadInput, CoaddInput
from cosmodm_ops.coadd.stages import StageTimer
from cosmodm_ops.coadd.swarp import SwarpError, SwarpInput, run_swarp
from cosmodm_ops.coadd.tiling import Tile

__all__ = ["BandCoadds", "coverage_fraction", "header_keywords", "product_paths", "run"]


@dataclass(frozen=True)
class BandCoadds:
    """The band's coadd products (compressed, in the output folder) and SWarp's plain weight (in the work folder).

    Attributes
    ----------
    paths : dict str -> Path
        ``coadd``, ``coadd_weight``, ``coadd_homog``, ``coadd_homog_weight``.
    plain_weight : Path
        The uncompressed weight of the plain coadd (for the coverage).
    """

    paths: dict[str, Path]
    plain_weight: Path


def product_paths(out: Path, tile: str, band: str) -> dict[str, Path]:
    """``<tile>_<band>_coadd[_homog][_weight].fits.fz`` in ``out``, by product kind."""
    return {kind: out / f"{tile}_{band}_{kind}.fits.fz"
            for kind in ("coadd", "coadd_weight", "coadd_homog", "coadd_homog_weight")}


def header_keywords(tile: str, band: str, magzero: float, n_images: int) -> dict[str, tuple[Any, str]]:
    """The header keywords every coadd product of the band carries."""
    return {"MAGZERO": (magzero, "[mag] zeropoint of the pixel values"),
            "BAND": (band, "filter band"), "TILENAME": (tile, "tile"),
            "NIMAGES": (n_images, "input CCD images")}


def coverage_fraction(weight: np.ndarray) -> float:
    """Fraction of the pixels with weight > 0."""
    return float(np.mean(weight > 0))


def run(tile: Tile, band: str, inputs: Sequence[CoaddInput], used: Sequence[int], fscale: np.ndarray,
        sky: dict[int, tuple[float, float]], homog: Sequence[SwarpInput], *, target_arcsec: float, beta: float,
        magzero: float, out: Path, work: Path, stage: StageTimer, nthreads: int | None = None) -> BandCoadds:
    """SWarp the plain and the homogenized coadd of the band and write them compressed into ``out``.

    Raises
    ------
    CoaddBadInput
        SWarp failed (its message carries the command's output).
    """
    paths = product_paths(out, tile.name, band)
    common = header_keywords(tile.name, band, magzero, len(used))
    threads = nthreads or os.cpu_count() or 1
    try:
        with stage("swarp"):
            raw_inputs = [SwarpInput(inputs[i].files["image"].path, inputs[i].files["weight"].path,
                                     float(fscale[i])) for i in used]
            skies = ",".join(f"{sky[i][0]:.6g}" for i in used)
            res1 = run_swarp(tile, raw_inputs, work / "coadd.fits", work / "coadd.weight.fits",
                             workdir=work / "swarp1", nthreads=threads,
                             extra={"SUBTRACT_BACK": "Y", "BACK_TYPE": "MANUAL", "BACK_DEFAULT": skies})
            compress_from(res1.image, paths["coadd"], {**common, "PSFHOMOG": (False, "PSF-homogenized")})
            compress_from(res1.weight, paths["coadd_weight"], common)
        with stage("swarp_homog"):
            res2 = run_swarp(tile, list(homog), work / "homog.fits", work / "homog.weight.fits",
                             workdir=work / "swarp2", nthreads=threads)
            psfkeys = {"PSFHOMOG": (True, "PSF-homogenized"), "NIMAGES": (len(homog), "input CCD images"),
                       "PSF_FWHM": (round(target_arcsec, 4), "[arcsec] Moffat FWHM of the PSF"),
                       "PSF_BETA": (beta, "Moffat beta of the PSF")}
            compress_from(res2.image, paths["coadd_homog"], {**common, **psfkeys})
            compress_from(res2.weight, paths["coadd_homog_weight"], common)
    except SwarpError as err:
        msg = f"tile {tile.name} band {band}: {err}"
        raise CoaddBadInput(msg) from err
    return BandCoadds(paths, res1.weight)
