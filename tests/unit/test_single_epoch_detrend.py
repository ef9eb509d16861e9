from __future__ import annotations

import numpy as np
import pytest

from cosmodm_ops.single_epoch import detrend as D


def _inputs(seed: int = 1):
    rng = np.random.default_rng(seed)
    ny, nx = 200, 160
    truth = np.full((ny, nx), 500.0, np.float32)  # sky in e- (flat-fielded frame)
    flat = (1.0 + 0.05 * np.sin(np.linspace(0, 3, nx)))[None, :] * np.ones((ny, 1))
    bias = rng.normal(3.0, 0.5, (ny, nx)).astype(np.float32)
    rn = 6.0
    raw_sky = truth * flat
    image = (rng.poisson(raw_sky) + rng.normal(0, rn, (ny, nx)) + bias).astype(np.float32)
    bpm = np.zeros((ny, nx), np.int16)
    bpm[50:60, 70] = 1
    image[120:125, 30] = 200000.0  # saturated column piece
    image[20, 100] += 5000.0  # a cosmic-ray hit
    return D.DetrendInputs(image=image, readnoise=rn, saturate=150000.0, bias=bias, flat=flat.astype(np.float32),
                           bpm=bpm), truth, flat


def test_run_does_not_modify_inputs_and_returns_new_arrays():
    inp, _, _ = _inputs()
    before = {k: np.copy(getattr(inp, k)) for k in ("image", "bias", "flat", "bpm")}
    res = D.run(inp)
    for k, arr in before.items():
        np.testing.assert_array_equal(getattr(inp, k), arr)
    assert res.image is not inp.image and not np.shares_memory(res.image, inp.image)
    assert res.image.dtype == np.float32 and res.weight.dtype == np.float32


def test_detrended_pixels_match_truth_within_noise():
    inp, truth, _flat = _inputs()
    res = D.run(inp)
    good = res.mask == 0
    chi = (res.image - truth) * np.sqrt(res.weight)
    chi2 = float(np.mean(chi[good] ** 2))
    assert abs(chi2 - 1.0) < 0.05
    assert abs(res.sky - 500.0) < 2.0


def test_mask_bits_flag_bad_saturated_bleed_cr_and_edge():
    inp, _, _ = _inputs()
    res = D.run(inp)
    b = D.MASK_BITS
    assert (res.mask[50:60, 70] & b["BADPIX"]).all()
    assert (res.mask[120:125, 30] & b["SATURATED"]).all()
    assert res.mask[118, 30] & b["BLEED"] and res.mask[126, 30] & b["BLEED"]
    assert res.mask[20, 100] & b["CR"]
    assert (res.mask[0, :] & b["EDGE"]).all()
    assert (res.weight[res.mask & (b["BADPIX"] | b["SATURATED"]) != 0] == 0).all()
    # a smooth star (FWHM 4 px) is not taken for a cosmic ray
    inp2, _, _ = _inputs(2)
    y, x = np.mgrid[:200, :160]
    star = 20000 * np.exp(-((x - 80) ** 2 + (y - 150) ** 2) / (2 * 1.7**2))
    inp2 = D.DetrendInputs(image=(inp2.image + star).astype(np.float32), readnoise=6.0, saturate=150000.0,
                           bias=inp2.bias, flat=inp2.flat)
    res2 = D.run(inp2)
    assert not (res2.mask[145:156, 75:86] & b["CR"]).any()


def test_weight_is_inverse_variance_of_sky_readnoise_and_flat():
    inp, _truth, flat = _inputs()
    res = D.run(inp, D.DetrendConfig(find_cosmic_rays=False))
    expected = 1.0 / ((res.sky * flat + 36.0) / flat**2)
    good = res.mask == 0
    np.testing.assert_allclose(res.weight[good], expected[good].astype(np.float32), rtol=1e-4)


def test_overscan_per_row_is_robust_to_outliers_and_smooths():
    rng = np.random.default_rng(3)
    rows = np.linspace(1500, 1510, 300)
    ovs = rows[:, None] + rng.normal(0, 2, (300, 50))
    ovs[:, 3] = 60000  # a hot column in the overscan
    level = D.overscan_per_row(ovs)
    assert np.max(np.abs(level - rows)) < 1.5
    smooth = D.overscan_per_row(ovs, smooth_rows=15)
    assert np.std(smooth - rows) < np.std(level - rows)


def test_relative_pixel_area_of_a_tan_wcs_is_near_one_at_centre():
    from astropy.wcs import WCS

    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [10.0, -30.0]
    w.wcs.crpix = [100.0, 100.0]
    w.wcs.cd = [[-0.263 / 3600, 0], [0, 0.263 / 3600]]
    area = D.relative_pixel_area(w, (200, 200), step=50)
    assert area.shape == (200, 200)
    assert area[100, 100] == pytest.approx(1.0, abs=1e-6)
