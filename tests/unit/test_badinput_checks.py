"""The pure bad-input checks the corpus relies on: file kinds, raw CCD pixels, reference-catalog overlap."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from cosmodm_ops.single_epoch.exposure_inputs import check_overlap
from cosmodm_ops.single_epoch.inputs import BadInputError, check_fits_file
from cosmodm_ops.single_epoch.rawdetrend import raw_pixel_problem


def _fits(path: Path) -> Path:
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.zeros((4, 4), np.float32))]).writeto(path)
    hdr = fits.getheader(path, 1)
    fits.setval(path, "CRVAL1", value=60.0, ext=1)
    fits.setval(path, "CRVAL2", value=-30.0, ext=1)
    assert "CRVAL1" not in hdr  # the check reads the file, not a cached header
    return path


def test_check_fits_file_names_what_the_file_is(tmp_path: Path):
    good = _fits(tmp_path / "good.fits")
    assert check_fits_file(good) == good
    empty = tmp_path / "empty.fits"
    empty.write_bytes(b"")
    gz = tmp_path / "gz.fits"
    gz.write_bytes(gzip.compress(good.read_bytes()))
    text = tmp_path / "text.fits"
    text.write_text("hello")
    cases = {empty: "empty file (0 bytes)", gz: "gzip-compressed but named '.fits'", text: "not a FITS file",
             tmp_path / "nope.fits": "not found", tmp_path: "is a folder"}
    for path, words in cases.items():
        with pytest.raises(BadInputError, match=r"expected|FITS") as err:
            check_fits_file(path)
        assert str(path) in str(err.value) and words in str(err.value)
    named_gz = tmp_path / "ok.fits.gz"
    named_gz.write_bytes(gz.read_bytes())
    assert check_fits_file(named_gz) == named_gz  # a container its name declares is the readers' business


def test_raw_pixel_problem_names_dead_nan_and_saturated_ccds():
    rng = np.random.default_rng(1)
    raw = rng.normal(1500, 5, (20, 30)).astype(np.float32)
    before = raw.copy()
    assert raw_pixel_problem(raw) is None
    np.testing.assert_array_equal(raw, before)  # not modified
    assert "every raw pixel equals 0 ADU" in raw_pixel_problem(np.zeros((20, 30), np.uint16))
    assert "100% of the raw pixels are NaN" in raw_pixel_problem(np.full((20, 30), np.nan, np.float32))
    sat = np.full((20, 30), 65535, np.uint16)
    sat[:, :5] = 1500  # overscan columns read normally
    assert "83% of the raw pixels are at the ADC maximum 65535" in raw_pixel_problem(sat)
    assert "100% of the raw pixels are at the ADC maximum" in raw_pixel_problem(np.full((4, 4), 65535, np.uint16))
    sat[:, :20] = 1500  # a third saturated: a bright star, not a dead CCD
    assert raw_pixel_problem(sat) is None


def test_check_overlap_refuses_a_catalog_of_another_field(tmp_path: Path):
    image = _fits(tmp_path / "img.fits")
    near = {"ra": np.array([60.5, 200.0]), "dec": np.array([-30.2, 10.0])}
    check_overlap(near, "ref.fits", str(image), 1)
    far = {"ra": np.array([240.0]), "dec": np.array([-30.0])}
    with pytest.raises(BadInputError, match=r"ref.fits HDU 1: no reference star overlaps.*nearest is 120.0 deg"):
        check_overlap(far, "ref.fits", str(image), 1)
    with pytest.raises(BadInputError, match="no rows"):
        check_overlap({"ra": np.array([]), "dec": np.array([])}, "ref.fits", str(image), 1)
