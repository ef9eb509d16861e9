"""Small binned PNG previews for the UI: an exposure's focal plane, a coadd (pure: arrays in, bytes out).

The survey pages show a preview per exposure and per coadd band; they read these few-kB PNGs,
never the 1 GB exposure. Nothing here reads or writes files (the wrappers that do live in
:mod:`cosmodm_ops.qa.thumbnail_products`).
"""

from __future__ import annotations

import struct
import warnings
import zlib
from collections.abc import Mapping

import numpy as np

__all__ = ["bin_image", "encode_png", "focal_plane_preview", "stretch"]


def bin_image(image: np.ndarray, factor: int) -> np.ndarray:
    """Mean of ``factor x factor`` blocks (NaN ignored; edges that do not fill a block dropped).

    Parameters
    ----------
    image : ndarray, shape (ny, nx)
    factor : int
        Block size in pixels (>= 1).

    Returns
    -------
    ndarray, shape (ny // factor, nx // factor), float32
    """
    if factor < 1:
        msg = f"bin factor must be >= 1, got {factor}"
        raise ValueError(msg)
    ny, nx = (image.shape[0] // factor) * factor, (image.shape[1] // factor) * factor
    if ny == 0 or nx == 0:
        return np.zeros((max(ny // factor, 1), max(nx // factor, 1)), np.float32)
    block = np.asarray(image[:ny, :nx], dtype=np.float32).reshape(ny // factor, factor, nx // factor, factor)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN block (a gap) stays NaN
        out = np.nanmean(block, axis=(1, 3))
    return out.astype(np.float32)


def stretch(image: np.ndarray, *, lo_pct: float = 1.0, hi_pct: float = 99.5, nan_value: int = 0) -> np.ndarray:
    """An asinh stretch between two percentiles to 8-bit grey (a new array; NaN -> ``nan_value``)."""
    data = np.asarray(image, dtype=np.float64)
    good = np.isfinite(data)
    out = np.full(data.shape, nan_value, np.uint8)
    if not good.any():
        return out
    lo, hi = np.percentile(data[good], [lo_pct, hi_pct])
    scale = max(hi - lo, 1e-12)
    x = np.clip((data[good] - lo) / scale, 0.0, 1.0)
    out[good] = np.round(255.0 * np.arcsinh(10.0 * x) / np.arcsinh(10.0)).astype(np.uint8)
    return out


def focal_plane_preview(ccds: Mapping[int, np.ndarray], centres_px: Mapping[int, tuple[float, float]],
                        *, size: int = 256) -> np.ndarray:
    """Place binned CCD images at their focal-plane positions on one grey canvas.

    Parameters
    ----------
    ccds : {ccdnum: ndarray (ny, nx)}
        Each CCD's image, already binned by the same factor (x along focal-plane x).
    centres_px : {ccdnum: (x, y)}
        CCD centres in the same binned pixels, focal-plane x right, y up.
    size : int
        Longest side of the result (pixels); the canvas is scaled down to fit.

    Returns
    -------
    ndarray, shape (h, w), uint8
        Row 0 at the top (north up, as the page shows it); gaps between CCDs are 0.
    """
    if not ccds:
        return np.zeros((8, 8), np.uint8)
    boxes = {}
    for c, img in ccds.items():
        x, y = centres_px[c]
        h, w = img.shape
        boxes[c] = (x - w / 2.0, y - h / 2.0)
    x0 = min(b[0] for b in boxes.values())
    y0 = min(b[1] for b in boxes.values())
    x1 = max(boxes[c][0] + ccds[c].shape[1] for c in ccds)
    y1 = max(boxes[c][1] + ccds[c].shape[0] for c in ccds)
    canvas = np.full((int(np.ceil(y1 - y0)), int(np.ceil(x1 - x0))), np.nan, np.float32)
    for c, img in ccds.items():
        bx, by = round(boxes[c][0] - x0), round(boxes[c][1] - y0)
        h, w = img.shape
        canvas[by:by + h, bx:bx + w] = img
    canvas = canvas[::-1]  # y up -> row 0 at the top
    factor = max(1, int(np.ceil(max(canvas.shape) / size)))
    return stretch(bin_image(canvas, factor) if factor > 1 else canvas)


def encode_png(grey: np.ndarray) -> bytes:
    """An 8-bit greyscale PNG of a 2-D uint8 array (zlib only: no imaging library needed)."""
    img = np.ascontiguousarray(grey, dtype=np.uint8)
    if img.ndim != 2:
        msg = f"encode_png expects a 2-D array, got shape {img.shape}"
        raise ValueError(msg)
    h, w = img.shape
    raw = b"".join(b"\x00" + img[r].tobytes() for r in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
