"""The exposure benchmark: products counted at their uncompressed size; star/galaxy completeness against truth."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from cosmodm_ops import fits as cfits
from cosmodm_ops.single_epoch.exposure_bench import uncompressed_bytes


def test_uncompressed_bytes_of_a_rice_image_match_its_decompressed_file(tmp_path: Path):
    rng = np.random.default_rng(3)
    image = (1000 + 30 * rng.standard_normal((300, 500))).astype(np.float32)
    mask = (rng.random((300, 500)) < 0.01).astype(np.int32)
    fz = cfits.write_image(tmp_path / "img.fits.fz", image, extname="SCI")
    mz = cfits.write_image(tmp_path / "msk.fits.fz", mask, extname="MSK")
    for path, nbytes in ((fz, image.nbytes), (mz, mask.nbytes)):
        plain = cfits.decompress_file(path, tmp_path / "plain.fits")
        assert path.stat().st_size < nbytes < uncompressed_bytes(path)
        # the same pixels uncompressed: equal to the decompressed file up to header blocks
        assert abs(uncompressed_bytes(path) - plain.stat().st_size) <= 2 * 2880


def test_uncompressed_bytes_of_plain_and_non_fits_files_is_their_size(tmp_path: Path):
    (tmp_path / "qa.json").write_text('{"a": 1}')
    plain = cfits.write_image(tmp_path / "plain.fits", np.ones((10, 10), np.float32), compress=False)
    assert uncompressed_bytes(tmp_path / "qa.json") == 8
    assert uncompressed_bytes(plain) == plain.stat().st_size


def test_linear_fit_extrapolates_a_per_exposure_and_a_per_ccd_part():
    from cosmodm_ops.single_epoch.exposure_bench import linear_fit

    # 30 s per exposure, 12 s per CCD (ours); previous 20 s per CCD with the same per-exposure part
    fit = linear_fit(62, 8, 30 + 8 * 12, 3, 30 + 3 * 12, 30 + 3 * 20)
    assert fit["cpu_per_exposure_s"] == 30 and fit["cpu_per_ccd_s"] == 12
    assert fit["core_minutes"] == round((30 + 62 * 12) / 60, 3)
    assert fit["previous_core_minutes"] == round((30 + 62 * 20) / 60, 3)
    assert linear_fit(62, 62, 100.0, 3, 10.0, 12.0) == {}  # a whole exposure: its own figure stands


def test_io_line_extrapolates_both_jobs_to_the_exposure_and_takes_the_ratios():
    from cosmodm_ops.single_epoch.exposure_bench import io_line

    # ours: 1000 read per exposure, 10 written per CCD; naive: 1000 + 300 per CCD read, 2000 + 200 per CCD written
    ours = [(2, 1000, 20), (4, 1000, 40)]
    naive = [(4, 1000 + 4 * 300, 2000 + 4 * 200), (2, 1000 + 2 * 300, 2000 + 2 * 200)]
    fit = io_line(62, ours, naive)
    assert (fit["io_ours_read"], fit["io_ours_written"]) == (1000, 620)
    assert (fit["io_naive_read"], fit["io_naive_written"]) == (1000 + 62 * 300, 2000 + 62 * 200)
    assert fit["io_ratio_read_write"] == round((19600 + 14400) / 1620, 2)
    assert fit["io_ratio_written"] == round(14400 / 620, 2)
    assert fit["io_naive_line"]["read_per_ccd"] == 300 and fit["io_ours_line"]["read_per_exposure"] == 1000
    assert io_line(62, [(62, 5, 5)], [(62, 50, 50)])["io_ratio_read_write"] == 10.0  # a whole exposure


def test_star_galaxy_completeness_in_two_snr_bins(tmp_path):
    """S/N > 20 and S/N 10-20 completeness of stars and galaxies matched to truth (issue 18, third round)."""
    import fitsio

    from cosmodm_ops.single_epoch.exposure_density import _star_galaxy

    n = 8
    ra, dec = 10.0 + np.arange(n) * 0.01, np.full(n, -30.0)
    is_star = np.array([1, 1, 0, 0, 1, 1, 0, 0], dtype=np.int16)
    (tmp_path / "night" / "truth").mkdir(parents=True)
    fitsio.write(str(tmp_path / "night" / "truth" / "objects.fits"),
                 {"ra": ra, "dec": dec, "is_star": is_star})
    snr = np.array([50, 50, 50, 50, 15, 15, 15, 5], dtype=np.float32)  # the last below S/N 10: not counted
    spread = np.array([0.0, 0.01, 0.02, 0.02, 0.0, 0.0, 0.0, 0.02], dtype=np.float32)
    (tmp_path / "se").mkdir()
    fitsio.write(str(tmp_path / "se" / "x_cat.fits"),
                 {"ALPHAWIN_J2000": ra, "DELTAWIN_J2000": dec, "SNR_WIN": snr, "SPREAD_MODEL": spread,
                  "FLAGS": np.zeros(n, np.int16)}, extname="LDAC_OBJECTS")
    res = _star_galaxy(tmp_path / "night", tmp_path / "se", 0.003)
    assert res == {"star_completeness_snr20": 0.5, "galaxy_completeness_snr20": 1.0, "n_matched_snr20": 4,
                   "star_completeness_snr10_20": 1.0, "galaxy_completeness_snr10_20": 0.0,
                   "n_matched_snr10_20": 3}


def test_amortize_divides_the_calibration_staging_among_the_exposures_of_a_node_night():
    from cosmodm_ops.single_epoch.exposure_staging import amortize

    warm = {"core_minutes": 20.0, "own_share": 0.25, "previous_core_minutes": 30.0, "calib_stage_cpu_s": 60.0,
            "calib_stage_read": 800, "calib_stage_written": 0, "io_ours_read": 400, "io_ours_written": 600,
            "io_naive_read": 40_000, "io_naive_written": 20_000, "io_ratio_read_write": 60.0}
    out = amortize(warm, 10)
    assert out["core_minutes_warm"] == 20.0 and out["core_minutes_cold"] == 21.0 and out["core_minutes"] == 20.1
    assert out["previous_core_minutes"] == 30.1 and out["previous_core_minutes_warm"] == 30.0
    assert out["own_share"] == round((300 + 6) / (1200 + 6), 4) and out["own_share_cold"] == round(360 / 1260, 4)
    assert out["io_ratio_read_write_warm"] == 60.0
    assert out["io_ratio_read_write"] == round(60_000 / (1000 + 80), 2)
    assert out["io_ratio_read_write_cold"] == round(60_000 / 1800, 2)
    assert out["io_ratio_written"] == round(20_000 / 600, 2) and out["io_ours_read_amortized"] == 480
    assert "divided by 10 exposures per node-night" in out["amortization"]


@pytest.mark.skipif(not (shutil.which("fpack") and shutil.which("funpack")), reason="fpack/funpack not installed")
def test_format_anchors_measure_fpack_on_the_products_and_scale_the_tools(tmp_path: Path):
    from cosmodm_ops.single_epoch.exposure_anchors import format_anchors

    rng = np.random.default_rng(3)
    sky = rng.normal(100.0, 5.0, (256, 256)).astype(np.float32)
    cfits.write_image(tmp_path / "x_ccd01_image.fits.fz", sky, None, extname="SCI")
    cfits.write_image(tmp_path / "x_ccd01_weight.fits.fz", np.full_like(sky, 0.04), None, extname="WGT", qlevel=1)
    cfits.write_image(tmp_path / "x_ccd01_mask.fits.fz", (sky > 110).astype(np.int32), None, extname="MSK")
    raw = cfits.write_images(tmp_path / "raw.fits.fz", [(f"C{i}", sky.astype(np.int16), None) for i in range(3)])
    res = {"n_ccds": 4, "cpu_astromatic_s": 84.0, "cpu_per_ccd_s": 27.5}
    out = format_anchors(tmp_path, raw, 62, res)
    assert out["tools_core_minutes"] == round(84.0 / 4 * 62 / 60, 2)
    assert out["fpack_products_cpu_s_per_ccd"] > 0 and out["funpack_raw_cpu_s_per_ccd"] >= 0
    floor = out["fpack_products_cpu_s_per_ccd"] + out["funpack_raw_cpu_s_per_ccd"]
    assert out["format_floor_s_per_ccd"] == pytest.approx(floor, abs=0.002)
    assert out["own_share_floor"] == pytest.approx(out["format_floor_s_per_ccd"] / 27.5, abs=1e-4)
    assert not list(tmp_path.glob("anchor.*"))  # its temp files are gone
    assert format_anchors(tmp_path / "none", raw, 62, res) == {}  # no products: no floor, no error
