from __future__ import annotations

import numpy as np

from cosmodm_ops.single_epoch import rawccd as R


def _raw(flipped: bool = False):
    rng = np.random.default_rng(5)
    sec = R.ccd_sections(64, 96, prescan=2, overscan=10, postscan_rows=6, flipped=flipped)
    raw = np.zeros(sec.raw_shape, np.float64)
    bias_rows = 1000 + np.arange(sec.raw_shape[0])[:, None] * 0.5
    raw += bias_rows
    sky = rng.poisson(400, (96, 64)).astype(float)
    sky[40:43, 50:53] += 20000  # a bright star on amp B
    raw[sec.rows, sec.data[0]] += sky[:, :32]
    raw[sec.rows, sec.data[1]] += sky[:, 32:]
    return sec, raw, sky


def test_sections_follow_the_camera_layout():
    sec = R.ccd_sections(2048, 4096, prescan=6, overscan=50, postscan_rows=50)
    assert sec.raw_shape == (4146, 2160)
    assert (sec.overscan[0].start, sec.data[0].start, sec.data[1].stop, sec.overscan[1].stop) == (6, 56, 2104, 2154)
    flipped = R.ccd_sections(2048, 4096, prescan=6, overscan=50, postscan_rows=50, flipped=True)
    assert flipped.rows == slice(50, 4146) and flipped.amp_names == ("B", "A")


def test_detrend_inplace_matches_dense_reference_and_removes_crosstalk_ghost():
    sec, raw, sky = _raw()
    c_ab, c_ba = 2e-3, 1e-3
    # add the ghost of B's star into A, mirrored, as the electronics do
    a = raw[sec.rows, sec.data[0]] - (1000 + np.arange(sec.rows.start, sec.rows.stop)[:, None] * 0.5)
    b = raw[sec.rows, sec.data[1]] - (1000 + np.arange(sec.rows.start, sec.rows.stop)[:, None] * 0.5)
    raw[sec.rows, sec.data[0]] += c_ab * b[:, ::-1]
    raw[sec.rows, sec.data[1]] += c_ba * a[:, ::-1]
    raw_i = np.round(raw).astype(np.int32)
    before = raw_i.copy()
    flat = np.ones((96, 64), np.float32)
    gof, bof = R.precombine_calibration((2.0, 2.0), np.zeros((96, 64), np.float32), flat, 32)
    out = np.empty((96, 64), np.float32)
    R.detrend_ccd_inplace(raw_i, out, sec, gof, bof, xtalk=(c_ab, c_ba))
    np.testing.assert_array_equal(raw_i, before)
    resid = out / 2.0 - sky
    ghost_rows = slice(40, 43)
    ghost_cols = slice(31 - 52 + 32, 31 - 50 + 32 + 1)  # mirror of columns 50..52 (B cols 18..20) in A
    ghost_before = c_ab * 20000
    assert np.abs(resid[ghost_rows, ghost_cols]).max() < ghost_before / 20
    assert np.abs(resid).max() < 1.5  # integer rounding of the raw values and the half-ADU medians


def test_row_median_equals_numpy_median():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 1000, (100, 50)).astype(np.int16)
    np.testing.assert_allclose(R._row_median(x), np.median(x, axis=1))
    np.testing.assert_allclose(R._row_median(x[:, :49]), np.median(x[:, :49], axis=1))
