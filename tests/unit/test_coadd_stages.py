"""The coadd stages' pure ``run`` functions, on arrays and tables in memory (no files, no Astromatic binaries)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cosmodm_ops.coadd import abscal, detection, homogenize, psf, stack, zeropoints
from cosmodm_ops.coadd import photcal as pc
from cosmodm_ops.coadd import qa as coadd_qa
from cosmodm_ops.coadd import synthetic as syn
from cosmodm_ops.coadd.inputs import CoaddBadInput

pytestmark = pytest.mark.unit


def _tan_wcs(shape: tuple[int, int], scale_arcsec: float = 0.263):
    from astropy.wcs import WCS

    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [50.0, -30.0]
    w.wcs.crpix = [(shape[1] + 1) / 2, (shape[0] + 1) / 2]
    w.wcs.cd = np.diag([-scale_arcsec / 3600.0, scale_arcsec / 3600.0])
    return w


def test_zeropoints_recover_the_truth_and_flux_scales_follow():
    det, truth = syn.photcal_tile(12, 150, ccd_deg=(0.3, 0.3), field_deg=0.6, seed=3)
    tables = syn.photcal_tables(det, truth)
    settings = pc.PhotcalSettings(repeatability_mmag=1e3)
    res = zeropoints.run(tables, [f"im{k}" for k in range(12)], list(range(12)), settings, tile="T", band="r")
    assert res.note is None and res.used == list(range(12))
    assert np.max(np.abs(res.zeropoints - truth.zeropoints)) < 0.01
    np.testing.assert_allclose(res.flux_scales(30.0), 10 ** (0.4 * (30.0 - 25.0 - res.zeropoints)))
    res.remove(4, "im4", "PSF model unusable")
    assert 4 not in res.used and res.flux_scales(30.0)[4] == 0.0 and res.removed[-1]["iteration"] == 0


def test_zeropoints_of_one_exposure_without_overlaps_are_zero_with_a_note():
    rng = np.random.default_rng(0)
    tables = [pc.StarMeasurements(np.array([10.0 + k]), np.array([0.0]), rng.normal(18, 0.1, 1), np.full(1, 0.01))
              for k in range(3)]  # three CCDs far apart: no star seen twice
    settings = pc.PhotcalSettings()
    res = zeropoints.run(tables, ["a", "b", "c"], [7, 7, 7], settings, tile="T", band="g")
    assert res.zeropoints.tolist() == [0.0, 0.0, 0.0] and res.repeatability is None and res.passed
    assert "one exposure (7)" in res.note
    with pytest.raises(CoaddBadInput, match="tile T band g: relative calibration impossible"):
        zeropoints.run(tables, ["a", "b", "c"], [7, 8, 9], settings, tile="T", band="g")


def test_homogenize_run_reaches_the_target_without_touching_its_inputs():
    shape = (256, 256)
    model = syn.psfex_like_model(shape, fwhm_range=(3.4, 3.8))
    rng = np.random.default_rng(2)
    image = (100.0 + rng.normal(0.0, 2.0, shape)).astype(np.float32)
    weight = np.full(shape, 0.25, np.float32)
    weight[:10] = 0.0
    image_before, weight_before = image.copy(), weight.copy()
    p = psf.measure(model, _tan_wcs(shape), shape)
    assert p.scale == pytest.approx(0.263) and 3.4 * 0.263 < p.fwhm < 3.8 * 0.263
    target = 5.0 * 0.263
    res = homogenize.run(image, weight, p, target, 2.5)
    np.testing.assert_array_equal(image, image_before)
    np.testing.assert_array_equal(weight, weight_before)
    assert res.sky == pytest.approx(100.0, abs=0.05) and res.sky_noise == pytest.approx(2.0, rel=0.05)
    assert res.reason is None and res.image.shape == shape and np.all(res.weight[:5] == 0)
    assert len(res.samples) == 9
    assert all(s["after"] == pytest.approx(target, rel=0.03) for s in res.samples)
    broad = homogenize.run(image, weight, p, 0.8 * p.fwhm, 2.5)  # narrower than the input: cannot convolve
    assert broad.image is None and "broader than the homogenization target" in broad.reason


def test_detection_weight_is_zero_where_any_band_lacks_data():
    rng = np.random.default_rng(4)
    imgs = [rng.normal(0, 1, (50, 50)) for _ in range(2)]
    wts = [np.ones((50, 50)), np.ones((50, 50))]
    wts[1][:, :5] = 0.0
    det, det_w = detection.run(imgs, wts)  # the default image is the mean S/N since issue 17
    np.testing.assert_array_equal(det, detection.snr_mean(imgs, wts))
    np.testing.assert_array_equal(detection.run(imgs, wts, "chi_mean")[0], detection.chi_mean(imgs, wts))
    with pytest.raises(ValueError, match="coadd.detection_image 'chi2'"):
        detection.run(imgs, wts, "chi2")
    assert det_w[:, :5].max() == 0.0 and det_w[:, 5:].min() == 1.0 and det_w.dtype == np.float32


def test_abscal_without_griz_keeps_the_relative_zeropoint_and_says_why():
    cats = {b: np.zeros(3, dtype=[("MAG_PSF", "f4")]) for b in ("g", "r")}
    cal = abscal.calibrate(cats, ["r"], {"g": 0.0, "r": 0.0}, "/no/such/refcat.fits", spread_model_max=0.003,
                           snr_min=20.0, match_radius_arcsec=1.0, label="calibrate T")
    assert cal.dzp == {"g": 0.0, "r": 0.0} and not cal.absolute and cal.result is None
    assert cal.reason == "stellar-locus fit needs g, r, i and z; have g,r"  # the refcat is not even opened


def test_coadd_checks_and_stack_names():
    assert coadd_qa.check("x", 1.0, None) == {"name": "x", "value": 1.0, "threshold": None, "verdict": "info"}
    assert coadd_qa.check("x", float("nan"), None, reason="r")["verdict"] == "skip"
    assert coadd_qa.check("x", 3.0, 2.0)["verdict"] == "fail"
    assert coadd_qa.verdict([{"verdict": "info"}, {"verdict": "pass"}]) == "pass"
    paths = stack.product_paths(Path("/o"), "T", "r")
    assert [p.name for p in paths.values()] == ["T_r_coadd.fits.fz", "T_r_coadd_weight.fits.fz",
                                                "T_r_coadd_homog.fits.fz", "T_r_coadd_homog_weight.fits.fz"]
    assert stack.coverage_fraction(np.array([[0.0, 1.0], [2.0, 0.0]])) == 0.5
