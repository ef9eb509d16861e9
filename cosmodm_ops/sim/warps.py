"""PS1-like warps: single-epoch images remapped onto the skycells of a projection cell, in grizy.

The conventions follow the PS1 DR2 image products (STScI's PS1 pages "Warps" and "PS1 Sky
Tessellation" on outerspace.stsci.edu; Waters et al. 2020, ApJS 251, 4):

- a projection cell is one TAN projection (``CRVAL1/2`` at its centre, North up, East left,
  0.25"/pixel); its skycells are a 10 x 10 grid of sub-images sharing that projection (same CRVAL,
  CRPIX shifted), overlapping their neighbours (real skycells: ~6250 x 6250 pixels, ~240 pixels of
  overlap); names ``skycell.PPPP.CCC`` and files ``<tess>.skycell.PPPP.CCC.wrp.<band>.<expid>.fits``
  with ``.mask.fits`` and ``.wt.fits`` beside (the "weight" file holds the *variance*);
- image pixels are asinh-compressed: stored ``v = a asinh((F - BOFFSET) / (2 BSOFTEN))`` with
  ``a = 2.5 log10(e)``, so ``F = BOFFSET + 2 BSOFTEN sinh(v / a)``; the variance file is linear here;
- the mask is 16-bit with named bits (``MSKNAMnn`` / ``MSKVALnn`` header pairs: DETECTOR, FLAT, DARK,
  BLANK, CTE, SAT, LOW, SUSPECT, CR, SPIKE, GHOST, STREAK, STARCORE, CONV.BAD, CONV.POOR); cell and
  OTA gaps are BLANK with NaN pixels;
- photometry: ``m = -2.5 log10(F) + HIERARCH FPA.ZP + 2.5 log10(EXPTIME)``, with ``HIERARCH
  FPA.EXPOSURE``, ``HIERARCH FPA.FILTERID`` ('r.00000'), ``HIERARCH FPA.AIRMASS``, ``MJD-OBS``.

Which keywords real IPP warps carry beyond these (and their exact spelling) should be checked on a
downloaded warp before this writer is used to test a reader of real files; the reader in
:mod:`cosmodm_ops.cameras.gpc1` accepts exactly what this module writes. Sources are rendered as
circular Gaussians (stars: the PSF; galaxies: PSF and size added in quadrature), enough for the
follow-up chain; the single-epoch simulator (:mod:`cosmodm_ops.sim.render`) does the detailed shapes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["ASINH_A", "MASK_NAMES", "SkycellSpec", "skycell_wcs", "warp_name", "write_warp"]

ASINH_A = 2.5 * math.log10(math.e)
MASK_NAMES: tuple[tuple[str, int], ...] = (
    ("DETECTOR", 1), ("FLAT", 2), ("DARK", 4), ("BLANK", 8), ("CTE", 16), ("SAT", 32), ("LOW", 64),
    ("SUSPECT", 128), ("CR", 256), ("SPIKE", 512), ("GHOST", 1024), ("STREAK", 2048), ("STARCORE", 4096),
    ("CONV.BAD", 8192), ("CONV.POOR", 16384),
)
PIXEL_SCALE = 0.25


@dataclass(frozen=True)
class SkycellSpec:
    """One skycell of a projection cell: ids, the cell's centre (deg), grid position and size (pixels)."""

    projection_cell: int
    skycell: int
    ra_cell: float
    dec_cell: float
    size: int = 6250
    overlap: int = 240
    tessellation: str = "rings.v3"
    pixel_scale: float = PIXEL_SCALE
    """arcsec/pixel (PS1: 0.25; the cluster benchmark simulates coarser, :mod:`cosmodm_ops.sim.clusterwarps`)."""

    @property
    def name(self) -> str:
        return f"skycell.{self.projection_cell:04d}.{self.skycell:03d}"


def skycell_wcs(spec: SkycellSpec) -> dict[str, object]:
    """TAN WCS keys of a skycell: the projection cell's CRVAL, CRPIX shifted to the skycell's place in the 10 x 10 grid."""
    ix, iy = spec.skycell % 10, spec.skycell // 10
    step = spec.size - spec.overlap
    crpix1 = 5 * step + spec.overlap / 2 - ix * step
    crpix2 = 5 * step + spec.overlap / 2 - iy * step
    return {"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": spec.ra_cell, "CRVAL2": spec.dec_cell,
            "CRPIX1": crpix1, "CRPIX2": crpix2, "CD1_1": -spec.pixel_scale / 3600.0, "CD1_2": 0.0,
            "CD2_1": 0.0, "CD2_2": spec.pixel_scale / 3600.0, "RADESYS": "ICRS", "EQUINOX": 2000.0}


def warp_name(spec: SkycellSpec, band: str, expid: int) -> str:
    return f"{spec.tessellation}.{spec.name}.wrp.{band}.{expid}"


def _render(shape: tuple[int, int], x: np.ndarray, y: np.ndarray, flux: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    img = np.zeros(shape, np.float64)
    for xi, yi, fi, si in zip(x, y, flux, sigma, strict=True):
        r = math.ceil(5 * si)
        x0, x1 = max(int(xi) - r, 0), min(int(xi) + r + 1, shape[1])
        y0, y1 = max(int(yi) - r, 0), min(int(yi) + r + 1, shape[0])
        if x0 >= x1 or y0 >= y1:
            continue
        gx = np.exp(-0.5 * ((np.arange(x0, x1) - xi) / si) ** 2)
        gy = np.exp(-0.5 * ((np.arange(y0, y1) - yi) / si) ** 2)
        img[y0:y1, x0:x1] += fi * np.outer(gy, gx) / (2 * math.pi * si**2)
    return img


def write_warp(out: Path, spec: SkycellSpec, band: str, expid: int, objects, *, zp: float = 25.0,
               exptime: float = 45.0, sky: float = 60.0, fwhm_arcsec: float = 1.2, mjd: float = 56000.0,
               airmass: float = 1.2, gap_columns: tuple[int, int] | None = None, seed: int = 0) -> dict[str, Path]:
    """Write the image, mask and variance of one warp; returns their paths (keys image, mask, variance).

    ``objects`` needs ``ra``, ``dec``, ``mags[band]``, ``is_star``, ``r_half`` (arcsec), as
    :class:`cosmodm_ops.sim.clusters.Objects`. Counts: ``F = 10**(-0.4 (m - zp - 2.5 log10 exptime))``.
    """
    import fitsio
    from astropy.wcs import WCS

    rng = np.random.default_rng([seed, expid, spec.skycell])
    wcs_keys = skycell_wcs(spec)
    w = WCS({**wcs_keys, "NAXIS": 2, "NAXIS1": spec.size, "NAXIS2": spec.size})
    x, y = w.all_world2pix(np.asarray(objects.ra), np.asarray(objects.dec), 0)
    inside = (x > -10) & (x < spec.size + 10) & (y > -10) & (y < spec.size + 10)
    mzero = zp + 2.5 * math.log10(exptime)
    flux = 10.0 ** (-0.4 * (np.asarray(objects.mags[band])[inside] - mzero))
    psf = fwhm_arcsec / 2.3548 / spec.pixel_scale
    size = np.where(objects.is_star[inside], 0.0, objects.r_half[inside] / 1.18 / spec.pixel_scale)
    signal = _render((spec.size, spec.size), x[inside], y[inside], flux, np.hypot(psf, size))
    variance = (sky + np.maximum(signal, 0.0) + 25.0).astype(np.float32)  # sky + source Poisson + read noise 5 e-
    image = signal + rng.normal(0.0, 1.0, signal.shape) * np.sqrt(variance)
    mask = np.zeros(image.shape, np.int16)
    if gap_columns is not None:
        mask[:, gap_columns[0]:gap_columns[1]] = 8  # BLANK: a cell gap
        image[:, gap_columns[0]:gap_columns[1]] = np.nan
        variance[:, gap_columns[0]:gap_columns[1]] = np.nan
    boffset, bsoften = float(np.nanmedian(image)), float(np.sqrt(sky))
    stored = (ASINH_A * np.arcsinh((image - boffset) / (2 * bsoften))).astype(np.float32)
    header = {**wcs_keys, "PSCAMERA": "GPC1", "PSFORMAT": "WARP", "SKYCELL": spec.name, "TESS_ID": spec.tessellation,
              "FILTER": band, "HIERARCH FPA.FILTERID": f"{band}.00000", "HIERARCH FPA.FILTER": f"{band}.00000",
              "EXPTIME": exptime, "HIERARCH FPA.EXPOSURE": exptime, "HIERARCH FPA.ZP": zp,
              "HIERARCH FPA.AIRMASS": airmass, "MJD-OBS": mjd, "EXP_ID": expid, "BSOFTEN": bsoften,
              "BOFFSET": boffset, "BUNIT": "counts"}
    stem = out / warp_name(spec, band, expid)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"image": Path(f"{stem}.fits"), "mask": Path(f"{stem}.mask.fits"), "variance": Path(f"{stem}.wt.fits")}
    masks = {f"MSKNAM{k:02d}": n for k, (n, _) in enumerate(MASK_NAMES)}
    masks |= {f"MSKVAL{k:02d}": v for k, (_, v) in enumerate(MASK_NAMES)}
    for key, data, extra in (("image", stored, {}), ("mask", mask, masks), ("variance", variance, {})):
        hdr = [{"name": k, "value": v} for k, v in {**header, **extra}.items()]
        fitsio.write(str(paths[key]), data, header=hdr, clobber=True)
    return paths
