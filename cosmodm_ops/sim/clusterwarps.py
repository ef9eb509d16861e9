"""Simulated PS1-like warps of cluster fields: one patch of skycells per candidate, in grizy, with truth beside.

A patch is a projection cell's central ``grid x grid`` skycells (:mod:`cosmodm_ops.sim.warps`:
asinh pixels, variance ``.wt``, named-bit ``.mask``, ``FPA.ZP`` + ``EXPTIME``), ``exposures`` warps per
band and skycell, of the objects of :func:`cosmodm_ops.sim.clusters.make_field` (stars, field
galaxies, the cluster: red sequence, BCG, NFW positions) around the patch centre.

Kept cheap on purpose, and so **not PS1's geometry**: the pixels are 0.5" (PS1: 0.25"), the
skycells 1800 pixels (PS1: ~6250 at 0.25"), and there are 2 warps per band (the 3pi stack has ~10):
each warp's sky noise is set so that the stack of the ``exposures`` warps reaches the PS1 3pi stack
depth of :data:`DEPTHS` (5 sigma, point source, PSF photometry), with PS1's 1-second zeropoints
(``include/configs/surveys/ps1.yaml``). PSF FWHM per band :data:`FWHM` (1.05-1.3"), +-5% between
exposures; the second exposure of each band has a BLANK cell-gap column band in one skycell.
Truth: ``truth/<patch>_objects.fits`` (:func:`~cosmodm_ops.sim.clusters.truth_table`) and
``truth/<patch>_clusters.fits``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cosmodm_ops.sim.clusters import BANDS, ClusterSpec, cluster_table, make_field, truth_table
from cosmodm_ops.sim.warps import SkycellSpec, write_warp

__all__ = ["DEPTHS", "FWHM", "WarpField", "patch_box", "sky_for_depth", "write_patch"]

#: PS1 3pi stack 5-sigma point-source depths (Chambers et al. 2016, table 11), AB.
DEPTHS = {"g": 23.3, "r": 23.2, "i": 23.1, "z": 22.3, "y": 21.4}
#: PSF FWHM (arcsec) per band (PS1 3pi medians are 1.1-1.3").
FWHM = {"g": 1.3, "r": 1.2, "i": 1.1, "z": 1.1, "y": 1.05}
#: PS1 1-second zeropoints (include/configs/surveys/ps1.yaml).
ZP_1S = {"g": 24.6, "r": 24.8, "i": 24.6, "z": 24.2, "y": 23.2}
READ_VARIANCE = 25.0


@dataclass(frozen=True)
class WarpField:
    """The geometry and depth of a simulated patch (see the module: coarser than PS1 on purpose)."""

    pixel_scale: float = 0.5
    skycell_size: int = 1800
    overlap: int = 60
    grid: int = 2
    """Skycells per side (the central ones of the projection cell's 10 x 10 grid)."""
    exposures: int = 2
    exptime: float = 45.0
    bands: tuple[str, ...] = BANDS

    @property
    def step(self) -> int:
        return self.skycell_size - self.overlap

    def half_width_deg(self) -> float:
        """Half the side of the area the skycells cover."""
        return (self.grid * self.step + self.overlap) / 2 * self.pixel_scale / 3600.0


def sky_for_depth(m5: float, fwhm: float, field: WarpField, zp_1s: float) -> float:
    """Sky counts per pixel of one warp so that ``field.exposures`` warps stack to 5-sigma depth ``m5``.

    Background-limited PSF photometry of a Gaussian PSF: noise-equivalent area ``4 pi sigma^2``.
    """
    mzero = zp_1s + 2.5 * math.log10(field.exptime)
    f5 = 10.0 ** (-0.4 * (m5 - mzero))
    sigma_px = fwhm / 2.3548 / field.pixel_scale
    var = (f5 / 5.0) ** 2 * field.exposures / (4.0 * math.pi * sigma_px**2)
    return max(var - READ_VARIANCE, 1.0)


def _cells(field: WarpField) -> list[int]:
    i0 = 5 - field.grid // 2
    return [iy * 10 + ix for iy in range(i0, i0 + field.grid) for ix in range(i0, i0 + field.grid)]


def _cell_centre(ra: float, dec: float, field: WarpField) -> tuple[float, float]:
    """The projection-cell centre that puts the skycells' covered area's middle at (ra, dec)."""
    i0 = 5 - field.grid // 2
    off = ((2 * i0 + field.grid) / 2.0 - 5.0) * field.step * field.pixel_scale / 3600.0  # +x is west, +y north
    return (ra + off / math.cos(math.radians(dec))) % 360.0, dec - off


def patch_box(ra: float, dec: float, field: WarpField, margin_deg: float = 0.02
              ) -> tuple[tuple[float, float], tuple[float, float]]:
    """RA and Dec ranges (deg) of the objects simulated for a patch centred at (ra, dec)."""
    h = field.half_width_deg() + margin_deg
    c = math.cos(math.radians(dec + math.copysign(h, dec)))
    return (ra - h / c, ra + h / c), (dec - h, dec + h)


def write_patch(out: Path, name: str, ra: float, dec: float, clusters: Sequence[ClusterSpec], *, seed: int,
                projection_cell: int, field: WarpField | None = None, bands: Sequence[str] | None = None
                ) -> dict[str, object]:
    """Simulate one patch's objects and write its warps (every band, skycell and exposure) and truth.

    ``bands`` leaves out the others (a patch with a missing band). Returns the warp image paths, the
    number of objects and the truth files.
    """
    field = field or WarpField()
    bands = list(bands) if bands is not None else list(field.bands)
    rng = np.random.default_rng([seed, projection_cell])
    objects = make_field(*patch_box(ra, dec, field), list(clusters), rng)
    ra_c, dec_c = _cell_centre(ra, dec, field)
    paths: list[str] = []
    for cell in _cells(field):
        spec = SkycellSpec(projection_cell, cell, ra_c, dec_c, size=field.skycell_size, overlap=field.overlap,
                           pixel_scale=field.pixel_scale)
        for band in bands:
            sky = sky_for_depth(DEPTHS[band], FWHM[band], field, ZP_1S[band])
            for e in range(field.exposures):
                expid = 100000 + 1000 * (projection_cell % 1000) + 10 * "grizy".index(band) + e
                gap = (field.skycell_size // 3, field.skycell_size // 3 + 12) if e == 1 and cell == _cells(field)[0] \
                    else None
                fwhm = FWHM[band] * (1.0 + 0.05 * (2 * e - 1) * (field.exposures > 1))
                written = write_warp(out, spec, band, expid, objects, zp=ZP_1S[band], exptime=field.exptime,
                                     sky=sky, fwhm_arcsec=fwhm, mjd=56000.0 + e + 0.1 * "grizy".index(band),
                                     gap_columns=gap, seed=seed)
                paths.append(str(written["image"]))
    import fitsio

    (out / "truth").mkdir(parents=True, exist_ok=True)
    obj_path, cl_path = out / "truth" / f"{name}_objects.fits", out / "truth" / f"{name}_clusters.fits"
    fitsio.write(str(obj_path), truth_table(objects), extname="OBJECTS", clobber=True)
    fitsio.write(str(cl_path), cluster_table(list(clusters)), extname="CLUSTERS", clobber=True)
    return {"warps": paths, "objects": len(objects), "truth": [str(obj_path), str(cl_path)]}
