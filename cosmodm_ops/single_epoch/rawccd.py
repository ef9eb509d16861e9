"""Raw CCD sections from the camera config, and the fast in-place raw -> electrons detrend.

Layout (CameraConfig docstring, DECam's generalised): each raw row reads
``prescan | overscan A | data A | data B | overscan B | prescan`` and there are
``postscan_rows`` extra rows after the data rows; for CCDs whose name starts with
one of ``flipped_prefixes`` (DECam's S CCDs) the amplifiers are swapped and the
postscan rows come first. Amplifier B is read out from the far side, so the
crosstalk source pixel of A at column j is B at the mirrored column.

:func:`detrend_ccd_inplace` is the hot loop: crosstalk within the CCD, row-by-row
overscan, trim, gain, bias and flat, in float32 on a caller-owned output buffer,
processed in blocks of rows that stay in the CPU cache. The calibration is given
pre-combined per night (``gain_over_flat = gain / flat`` and ``bias_over_flat =
bias / flat``, both in the trimmed frame), so each block costs one subtract, one
crosstalk pass, one multiply and one subtract.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["CcdSections", "ccd_sections", "detrend_ccd_inplace", "precombine_calibration"]


@dataclass(frozen=True)
class CcdSections:
    """Slices of one raw CCD (0-based, numpy order). ``data[i]`` and ``overscan[i]`` are column slices
    of amplifier i (i=0 the left amplifier of the trimmed CCD), ``rows`` the data rows."""

    raw_shape: tuple[int, int]
    rows: slice
    data: tuple[slice, slice]
    overscan: tuple[slice, slice]
    amp_names: tuple[str, str]


def ccd_sections(ccd_nx: int, ccd_ny: int, prescan: int, overscan: int, postscan_rows: int,
                 flipped: bool = False) -> CcdSections:
    """Raw sections of a two-amplifier CCD (see the module docstring)."""
    half = ccd_nx // 2
    nx_raw = 2 * (prescan + overscan) + ccd_nx
    ny_raw = ccd_ny + postscan_rows
    ovs_a = slice(prescan, prescan + overscan)
    dat_a = slice(prescan + overscan, prescan + overscan + half)
    dat_b = slice(dat_a.stop, dat_a.stop + half)
    ovs_b = slice(dat_b.stop, dat_b.stop + overscan)
    rows = slice(postscan_rows, postscan_rows + ccd_ny) if flipped else slice(0, ccd_ny)
    names = ("B", "A") if flipped else ("A", "B")
    return CcdSections(raw_shape=(ny_raw, nx_raw), rows=rows, data=(dat_a, dat_b), overscan=(ovs_a, ovs_b),
                       amp_names=names)


def precombine_calibration(gains: tuple[float, float], bias_e: np.ndarray, flat: np.ndarray, half: int
                           ) -> tuple[np.ndarray, np.ndarray]:
    """``gain / flat`` and ``bias / flat`` (float32, trimmed frame) for :func:`detrend_ccd_inplace`."""
    g = np.empty(flat.shape, np.float32)
    g[:, :half] = gains[0]
    g[:, half:] = gains[1]
    safe = np.where(flat > 0.05, flat, 1.0).astype(np.float32)
    return (g / safe).astype(np.float32), (bias_e / safe).astype(np.float32)


def _row_median(block: np.ndarray) -> np.ndarray:
    """Median along axis 1 of a narrow block (overscan columns): sort a contiguous copy (cheaper than
    np.median's general path, 0.2 ms for 4096 x 50)."""
    srt = np.sort(np.ascontiguousarray(block), axis=1)
    n = srt.shape[1]
    k = n // 2
    if n % 2:
        return srt[:, k].astype(np.float32)
    return 0.5 * (srt[:, k - 1].astype(np.float32) + srt[:, k].astype(np.float32))


def detrend_ccd_inplace(raw: np.ndarray, out: np.ndarray, sec: CcdSections, gain_over_flat: np.ndarray,
                        bias_over_flat: np.ndarray, xtalk: tuple[float, float] = (0.0, 0.0),
                        xtalk_dense_above: float = 500.0, block_rows: int = 128) -> np.ndarray:
    """Raw ADU -> flat-fielded electrons, into ``out`` (float32, trimmed shape).

    Parameters
    ----------
    raw : ndarray, shape ``sec.raw_shape``, integer or float
        One raw CCD in ADU (BZERO applied).
    out : ndarray, shape (ccd_ny, ccd_nx), float32
        Output buffer (overwritten).
    sec : CcdSections
    gain_over_flat, bias_over_flat : ndarray, shape of ``out``, float32
        Pre-combined calibration (:func:`precombine_calibration`); bias in electrons.
    xtalk : (c_ab, c_ba)
        Linear crosstalk: amp A picks up ``c_ab`` x (B, mirrored) and B picks up ``c_ba`` x (A, mirrored),
        in ADU after overscan.
    xtalk_dense_above : float
        Rows whose source amplifier exceeds this (ADU above overscan) get the pixel-by-pixel mirrored
        correction; other rows get ``c x`` the source row's mean, which leaves at most
        ``c x xtalk_dense_above`` (0.5 ADU for c = 1e-3) uncorrected: far below the sky noise.
    block_rows : int
        Rows per block (a block of both amplifiers stays in the L2 cache).
    """
    ny, nx = out.shape
    half = nx // 2
    r0 = sec.rows.start
    (da, db), (oa, ob) = sec.data, sec.overscan
    c_ab, c_ba = np.float32(xtalk[0]), np.float32(xtalk[1])
    med_a = _row_median(raw[sec.rows, oa])[:, None]
    med_b = _row_median(raw[sec.rows, ob])[:, None]
    ones = np.ones(half, np.float32)
    thresh_a = med_a[:, 0] + xtalk_dense_above
    thresh_b = med_b[:, 0] + xtalk_dense_above
    for y0 in range(0, ny, block_rows):
        y1 = min(ny, y0 + block_rows)
        a = out[y0:y1, :half]
        b = out[y0:y1, half:]
        raw_a = raw[r0 + y0:r0 + y1, da]
        raw_b = raw[r0 + y0:r0 + y1, db]
        np.copyto(a, raw_a, casting="unsafe")
        np.copyto(b, raw_b, casting="unsafe")
        if not (c_ab or c_ba):
            a -= med_a[y0:y1]
            b -= med_b[y0:y1]
        else:
            # row means above overscan (BLAS matrix-vector product) carry the faint part of the crosstalk
            mean_a = (a @ ones) / half - med_a[y0:y1, 0]
            mean_b = (b @ ones) / half - med_b[y0:y1, 0]
            # rows with a bright source pixel (max of the integer raw: cheap) get the pixel-by-pixel part
            dense = np.nonzero((raw_a.max(axis=1) > thresh_a[y0:y1]) | (raw_b.max(axis=1) > thresh_b[y0:y1]))[0]
            if dense.size:
                extra_a = c_ab * (b[dense, ::-1] - (med_b[y0:y1][dense] + mean_b[dense, None]))
                extra_b = c_ba * (a[dense, ::-1] - (med_a[y0:y1][dense] + mean_a[dense, None]))
            a -= (med_a[y0:y1, 0] + c_ab * mean_b)[:, None]
            b -= (med_b[y0:y1, 0] + c_ba * mean_a)[:, None]
            if dense.size:
                a[dense] -= extra_a
                b[dense] -= extra_b
        blk = out[y0:y1]
        blk *= gain_over_flat[y0:y1]
        blk -= bias_over_flat[y0:y1]
    return out
