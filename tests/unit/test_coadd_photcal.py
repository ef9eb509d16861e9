from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cosmodm_ops.coadd import photcal as pc
from cosmodm_ops.coadd import synthetic as syn
from cosmodm_ops.config import load_config

SMALL = {"ccd_deg": (0.3, 0.3), "field_deg": 0.5}


def test_zeropoints_recover_truth_and_gauges():
    det, truth = syn.photcal_tile(40, 200, ccd_deg=(0.3, 0.3), field_deg=0.7, seed=2)
    zp, err = pc.solve_zeropoints(det, gauge="mean")
    assert abs(np.nanmean(zp)) < 1e-12
    pull = (zp - truth.zeropoints) / err
    assert np.nanstd(pull) == pytest.approx(1.0, abs=0.3)
    assert np.nanmax(np.abs(zp - truth.zeropoints)) < 5 * np.nanmax(err)
    zp5, err5 = pc.solve_zeropoints(det, gauge=5)
    assert zp5[5] == 0.0 and err5[5] == 0.0
    # the two gauges differ by a constant only
    np.testing.assert_allclose(zp5 - zp5.mean(), zp, atol=1e-10)


def test_input_not_modified_and_survey_solver_agrees():
    det, _truth = syn.photcal_tile(30, 150, ccd_deg=(0.3, 0.3), field_deg=0.6, seed=8)
    before = det.mag.copy()
    zp, _ = pc.solve_zeropoints(det, errors=False)
    np.testing.assert_array_equal(det.mag, before)
    zs = pc.solve_survey(det.image, det.star, det.mag, det.magerr, det.n_images)
    np.testing.assert_allclose(zs, zp, atol=1e-7)


def test_wls_reaches_cramer_rao_bound():
    ratio, crlb_rms = syn.photcal_crlb_ratio(
        200, n_images=20, stars_per_image=100, ccd_deg=(0.3, 0.3), field_deg=0.6
    )
    assert 0.9 < ratio <= 1.05
    assert 0 < crlb_rms < 0.002


def test_matching_rebuilds_the_stars():
    det, truth = syn.photcal_tile(12, 200, seed=3, **SMALL)
    tables = syn.photcal_tables(det, truth, jitter_arcsec=0.1)
    matched = pc.match_stars(tables, radius_arcsec=1.0)
    assert len(matched.image) == len(det.image)
    # the matched groups are exactly the true stars (the tables keep detection order)
    pairs = set(zip(matched.star.tolist(), det.star.tolist(), strict=True))
    assert len(pairs) == len({s for s, _ in pairs}) == len({t for _, t in pairs})
    res = pc.run(tables)
    assert np.nanstd(res.zeropoints - truth.zeropoints) < 0.002


def test_repeatability_at_bright_end_matches_noise_floor(tmp_path: Path):
    floor = 0.010
    det, _ = syn.photcal_tile(10, 300, floor_mag=floor, seed=4, **SMALL)
    res = pc.calibrate(det, pc.PhotcalSettings(bright_magerr=0.003))
    rep = res.repeatability
    assert res.passed and res.removed == []
    assert rep.n_bright_pairs > 1000
    assert floor * 1000 / 1.1 <= rep.bright_sys_mmag <= 1.1 * floor * 1000
    assert rep.bright_mmag <= 1.1 * floor * 1000
    # systematic part flat at the floor over the bright bins, total rising with errors at the faint end
    bright_bins = (rep.mag < 18) & (rep.n_pairs > 100)
    assert np.all(np.abs(rep.sys_mmag[bright_bins] - 10.0) < 1.5)
    assert rep.total_mmag[rep.n_pairs > 0][-1] > 2 * rep.total_mmag[rep.n_pairs > 0][0]
    png = pc.plot_repeatability(rep, tmp_path / "rep.png", threshold_mmag=30)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


@pytest.mark.parametrize(
    ("kw", "bad"),
    [
        ({"bad_images": {7: 0.15}}, [7]),
        ({"nongrey_images": {3: 0.15}}, [3]),
        ({"bad_images": {7: 0.15}, "nongrey_images": {3: 0.1}}, [7, 3]),
    ],
)
def test_bad_images_are_removed_with_reasons(kw, bad):
    det, truth = syn.photcal_tile(10, 300, floor_mag=0.01, seed=4, **SMALL, **kw)
    names = [f"D00{k:04d}_c01" for k in range(10)]
    res = pc.calibrate(det, image_names=names)
    assert [r.index for r in res.removed] == bad
    assert res.removed[0].name == names[bad[0]] and "repeatability" in res.removed[0].reason
    assert res.history_mmag[0] > 30 >= res.history_mmag[-1] and res.passed
    assert np.all(np.isnan(res.zeropoints[bad]))
    good = np.isfinite(res.zeropoints)
    err = res.zeropoints[good] - truth.zeropoints[good]
    assert np.std(err) < 0.002  # (the gauge mean differs only by the removed images' mean)
    assert res.qa()["n_removed"] == len(bad)


def test_images_with_too_few_stars_are_removed():
    det, _ = syn.photcal_tile(10, 300, seed=4, **SMALL)
    keep = ~((det.image == 2) & (np.arange(len(det.image)) % 50 != 0))
    sub = pc.Detections(det.image[keep], det.star[keep], det.mag[keep], det.magerr[keep], 10, det.n_stars)
    res = pc.calibrate(sub, pc.PhotcalSettings(min_stars=20))
    assert [r.index for r in res.removed] == [2] and "matched stars" in res.removed[0].reason


def test_select_stars_and_settings_from_config():
    cat = {
        "ALPHAWIN_J2000": np.array([1.0, 1.1, 1.2, 1.3]),
        "DELTAWIN_J2000": np.zeros(4),
        "SPREAD_MODEL": np.array([0.001, 0.01, -0.002, 0.0]),
        "MAG_PSF": np.array([18.0, 18.0, 18.0, 22.0]),
        "MAGERR_PSF": np.array([0.01, 0.01, 0.01, 0.2]),
        "FLAGS": np.array([0, 0, 4, 0]),
    }
    stars = pc.select_stars(cat, spread_model_max=0.003, snr_min=20)
    np.testing.assert_array_equal(stars.ra, [1.0])
    with pytest.raises(pc.PhotcalError, match="MAGERR_AUTO"):
        pc.select_stars({k: v for k, v in cat.items()}, mag_col="MAG_AUTO")
    cfg = load_config("demo")
    st = pc.PhotcalSettings.from_config(cfg)
    assert st.repeatability_mmag == cfg.qa.repeatability_mmag == 30.0
    assert st.match_radius_arcsec == cfg.coadd.match_radius_arcsec


def test_survey_solver_on_a_connected_network():
    det, zp_true = syn.photcal_survey(3000, 40, seed=1)
    assert det.n_images >= 3000
    zp = pc.solve_survey(det.image, det.star, det.mag, det.magerr, det.n_images)
    assert np.all(np.isfinite(zp)) and abs(zp.mean()) < 1e-10
    assert np.std(zp - zp_true) < 0.003  # 40 stars per image, mmag-level errors, large-scale modes
    direct, _ = pc.solve_zeropoints(det, errors=False)
    np.testing.assert_allclose(zp, direct, atol=1e-6)


def test_no_bright_stars_fails_without_removing_images():
    det, _ = syn.photcal_tile(10, 200, mag_range=(20.5, 21.0), seed=6, **SMALL)
    res = pc.calibrate(det)
    assert not res.passed and res.removed == [] and np.isnan(res.repeatability.bright_mmag)
    assert np.all(np.isfinite(res.zeropoints))


def test_real_des_catalog_star_selection_and_self_calibration():
    import fitsio

    from tests.support import real_file

    path = real_file("piff/DECam_00241238_01_cat.fits")
    cat = fitsio.read(str(path), ext="LDAC_OBJECTS")
    stars = pc.read_star_measurements(path, mag_col="MAG_PSF", spread_model_max=0.003, snr_min=20)
    np.testing.assert_array_equal(stars.mag, pc.select_stars(cat).mag)
    with pytest.raises(pc.PhotcalError, match="LDAC_OBJECTS"):
        pc.read_star_measurements(path, mag_col="MAG_MODEL")
    assert 30 < len(stars) < len(cat)
    assert np.all(1.0857 / stars.magerr >= 20)
    # a second "epoch": the same stars, 0.1 mag fainter, re-measured with their errors
    rng = np.random.default_rng(0)
    again = pc.StarMeasurements(
        stars.ra, stars.dec, stars.mag + 0.1 + rng.normal(0, 1, len(stars)) * stars.magerr, stars.magerr
    )
    res = pc.run([stars, again], pc.PhotcalSettings(gauge=0))
    assert res.zeropoints[0] == 0.0
    assert res.zeropoints[1] == pytest.approx(-0.1, abs=3 * res.errors[1])
    assert res.errors[1] < 0.005
