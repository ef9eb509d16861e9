"""The compiled (numba) kernel of :func:`cosmodm_ops.single_epoch.rawccd.detrend_ccd_inplace`.

A module of its own so that importing the camera layout (the simulator, the DAGs) does not import
numba; numba caches the machine code beside this file (``__pycache__``).
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["detrend_rows", "detrend_rows_fixed16"]


@numba.njit(cache=True, nogil=True, fastmath=True)
def _xtalk_exact(victim_o, victim_g, source, ref, c, exact_above):  # pragma: no cover - compiled
    """The pixel-by-pixel part of the crosstalk: where the source departs from its row mean ``ref``
    by more than ``exact_above`` ADU (stars, cosmic rays, bleed trails), subtract ``c x`` that
    departure from the mirrored victim pixel (already in electrons / flat, hence ``x victim_g``)."""
    n = victim_o.size
    for m in range(n):
        dv = np.float32(source[m]) - ref
        if abs(dv) > exact_above:
            j = n - 1 - m
            victim_o[j] -= c * dv * victim_g[j]


@numba.njit(cache=True, nogil=True, fastmath=True)
def detrend_rows(raw, out, r0, da, db, med_a, med_b, gof, bof, c_ab, c_ba,
                  exact_above):  # pragma: no cover - compiled
    """The fused kernel, row by row (all loops on contiguous 1-D views with selects, which LLVM
    vectorizes): (1) each amplifier's raw row sum and integer extremes (the row then sits in L1);
    (2) one pass writing ``(raw - overscan - c x mean of the mirrored source above its overscan)
    x gain/flat - bias/flat``; (3) on rows where a source pixel departs from its row mean by more
    than ``exact_above``, the rest of the crosstalk pixel by pixel."""
    ny, nx = out.shape
    half = nx // 2
    inv = np.float32(1.0 / half)
    coef = (c_ab, c_ba)
    mean = np.zeros(2, np.float32)
    hi = np.empty(2, np.float32)
    lo = np.empty(2, np.float32)
    for y in range(ny):
        row = raw[r0 + y]
        o = out[y]
        g = gof[y]
        b = bof[y]
        srcs = (row[da:da + half], row[db:db + half])
        outs = (o[:half], o[half:])
        gains = (g[:half], g[half:])
        biases = (b[:half], b[half:])
        levels = (med_a[y], med_b[y])
        for i in range(2):
            src = srcs[i]
            s = np.float32(0.0)
            h = src[0]
            lw = src[0]
            for j in range(half):
                r = src[j]
                s += np.float32(r)
                h = r if r > h else h  # noqa: FURB136 - a select vectorizes, max() does not in numba
                lw = r if r < lw else lw  # noqa: FURB136
            mean[i] = s * inv
            hi[i] = h
            lo[i] = lw
        for i in range(2):
            src, oo, gg, bb = srcs[i], outs[i], gains[i], biases[i]
            lvl = levels[i] + coef[i] * (mean[1 - i] - levels[1 - i])
            for j in range(half):
                oo[j] = (np.float32(src[j]) - lvl) * gg[j] - bb[j]
        for i in range(2):
            k = 1 - i  # the source amplifier of victim i
            if coef[i] != 0 and (hi[k] - mean[k] > exact_above or mean[k] - lo[k] > exact_above):
                _xtalk_exact(outs[i], gains[i], srcs[k], mean[k], coef[i], exact_above)


@numba.njit(cache=True, nogil=True, fastmath=True)
def detrend_rows_fixed16(raw, out, r0, da, db, med_a, med_b, gq, g0, gs, bq, b0, bs):  # pragma: no cover
    """:func:`detrend_rows` without crosstalk, with the calibration in 16-bit fixed point (issue 18's
    experiment): ``gain/flat = g0 + gs x gq`` and ``bias/flat = b0 + bs x bq`` (``gq``, ``bq`` uint16), so
    the kernel reads 2 x 16 MiB of calibration per CCD instead of 2 x 32 MiB."""
    ny, nx = out.shape
    half = nx // 2
    for y in range(ny):
        row = raw[r0 + y]
        o = out[y]
        g = gq[y]
        b = bq[y]
        for i in range(2):
            start = da if i == 0 else db
            lvl = med_a[y] if i == 0 else med_b[y]
            off = i * half
            for j in range(half):
                gg = g0 + gs * np.float32(g[off + j])
                bb = b0 + bs * np.float32(b[off + j])
                o[off + j] = (np.float32(row[start + j]) - lvl) * gg - bb
