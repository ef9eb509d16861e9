"""Instrument signatures of the simulated camera: bias structure, flat field, illumination, bad columns.

Per CCD, in the trimmed frame (``ccd_ny x ccd_nx``), deterministic for (seed, CCDNUM, band):

- ``bias_e``: the 2-D residual bias pattern in electrons (after the overscan is removed):
  column-to-column offsets, a start-of-readout ramp in the first rows, a small step
  between the amplifiers.
- ``F``: the true pixel response: pixel-to-pixel QE (0.8 %), a per-CCD QE factor, a
  smooth vignetting over the focal plane and a band-dependent gradient.
- ``L``: the smooth illumination error of the dome flat (a few %; per band).
  The dome flat is ``F x L`` and the star flat ``L``; the sky lands on the detector as
  ``F x S`` (flat-fielding by F x L then multiplying by L returns S).
- bad columns: a few per CCD (hot: extra charge, partly or wholly along the column).

The flat is normalised so that the median of ``F x L`` over the focal plane is 1
(the normalisation is computed on a coarse grid: cheap for DECam as for decam-mini).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from cosmodm_ops.cameras.layout import CcdInfo, FocalPlane

__all__ = ["BAND_INDEX", "CcdSignature", "ccd_signature"]

BAND_INDEX = {"u": 0, "g": 1, "r": 2, "i": 3, "z": 4, "Y": 5, "J": 6}


@dataclass(frozen=True)
class CcdSignature:
    """One CCD's signatures in one band (arrays float32 of the trimmed shape unless noted).

    Attributes
    ----------
    bias_e, flat_true, illum : ndarray
        Residual bias (e-), true response F, illumination error L.
    bad_columns : list of (x, y0, y1, extra_e)
        Hot column segments: column x, rows y0:y1, extra electrons per pixel per exposure.
    amp_offsets_adu : (float, float)
        Overscan level offsets of the left and right amplifier (ADU, added to the camera's bias level).
    """

    bias_e: np.ndarray
    flat_true: np.ndarray
    illum: np.ndarray
    bad_columns: list[tuple[int, int, int, float]]
    amp_offsets_adu: tuple[float, float]

    @property
    def dome_flat(self) -> np.ndarray:
        """F x L (what the dome flat shows)."""
        return self.flat_true * self.illum

    def bpm(self) -> np.ndarray:
        """Bad-pixel map (int32, nonzero = bad)."""
        out = np.zeros(self.bias_e.shape, np.int32)
        for x, y0, y1, _ in self.bad_columns:
            out[y0:y1, x] = 1
        return out


def _fp_coords(fp: FocalPlane, ccd: CcdInfo, step: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Focal-plane coordinates (degrees, xi along pixel x) of the pixel grid, broadcastable (1, nx), (ny, 1)."""
    cam = fp.camera
    s = cam.pixel_scale / 3600.0
    xi0, eta0 = fp.offset_deg(ccd)
    xs = xi0 + (np.arange(0, cam.ccd_nx, step) - (cam.ccd_nx - 1) / 2.0) * s
    ys = eta0 + (np.arange(0, cam.ccd_ny, step) - (cam.ccd_ny - 1) / 2.0) * s
    return xs[None, :].astype(np.float32), ys[:, None].astype(np.float32)


def _smooth_terms(fp: FocalPlane, ccd: CcdInfo, band: str, seed: int, step: int = 1
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Smooth parts of F (vignetting x CCD QE x band gradient) and of L, float32 on a grid."""
    x, y = _fp_coords(fp, ccd, step)
    rmax = np.float32(fp.radius_deg())
    x, y = x / rmax, y / rmax
    rho2 = x * x + y * y
    b = BAND_INDEX.get(band, 7)
    rng_ccd = np.random.default_rng([seed, 11, ccd.ccdnum])
    qe = 1.0 + rng_ccd.uniform(-0.04, 0.04)
    rng_band = np.random.default_rng([seed, 13, ccd.ccdnum, b])
    qe_band = 1.0 + rng_band.uniform(-0.01, 0.01)
    gx, gy = np.random.default_rng([seed, 17, b]).uniform(-0.015, 0.015, 2)
    f_smooth = np.float32(qe * qe_band) * (np.float32(1.0) - np.float32(0.04) * rho2)
    f_smooth *= np.float32(1.0) + np.float32(gx) * x
    la, lx, ly = np.random.default_rng([seed, 19, b]).uniform([0.01, -0.02, -0.02], [0.03, 0.02, 0.02])
    illum = np.float32(la) * rho2
    illum += (np.float32(1.0 - 0.5 * la) + np.float32(lx) * x) + np.float32(ly + 0.0 * gy) * y
    return f_smooth, illum


_NORM: dict[tuple[int, str, int], float] = {}


def _normalisation(fp: FocalPlane, band: str, seed: int) -> float:
    """Median of the smooth F x L over the focal plane (coarse grid; remembered per focal plane)."""
    key = (id(fp), band, seed)
    if key not in _NORM:
        _NORM[key] = _normalisation_uncached(fp, band, seed)
    return _NORM[key]


def _normalisation_uncached(fp: FocalPlane, band: str, seed: int) -> float:
    step = max(1, min(fp.camera.ccd_nx, fp.camera.ccd_ny) // 32)
    vals = []
    for c in fp.ccds:
        f, l_ = _smooth_terms(fp, c, band, seed, step)
        vals.append((f * l_).ravel())
    return float(np.median(np.concatenate(vals)))


def ccd_signature(fp: FocalPlane, ccd: CcdInfo, band: str, seed: int) -> CcdSignature:
    """The signatures of one CCD in one band (deterministic for ``seed``)."""
    cam = fp.camera
    ny, nx = cam.ccd_ny, cam.ccd_nx
    half = nx // 2
    rng = np.random.default_rng([seed, 23, ccd.ccdnum])
    # bias: column offsets (0.6 e-), a ramp over the first ~30 rows (8 e-), an amplifier step
    cols = rng.normal(0.0, 0.6, nx)
    rows = 8.0 * np.exp(-np.arange(ny) / 30.0)
    step = np.where(np.arange(nx) < half, 0.0, rng.uniform(-1.5, 1.5))
    bias_e = (cols[None, :] + step[None, :] + rows[:, None]).astype(np.float32)
    # true response: pixel-to-pixel QE (same in every band), smooth terms per band
    flat_true = rng.standard_normal((ny, nx), dtype=np.float32)
    flat_true *= np.float32(0.008)
    flat_true += np.float32(1.0)
    f_smooth, illum = _smooth_terms(fp, ccd, band, seed)
    flat_true *= f_smooth * np.float32(1.0 / _normalisation(fp, band, seed))
    # bad columns: 1-3 hot segments
    bad = []
    for _ in range(int(rng.integers(1, 4))):
        x = int(rng.integers(4, nx - 4))
        y0 = int(rng.integers(0, ny // 2)) if rng.random() < 0.5 else 0
        bad.append((x, y0, ny, float(rng.uniform(300.0, 3000.0))))
    offsets = (float(rng.uniform(-120, 120)), float(rng.uniform(-120, 120)))
    return CcdSignature(bias_e, flat_true, np.ascontiguousarray(np.broadcast_to(illum, (ny, nx))), bad, offsets)


def airmass_from(rng: np.random.Generator) -> float:
    """A plausible airmass (1.02-1.45)."""
    return float(1.0 / math.cos(math.radians(rng.uniform(10.0, 46.0))))
