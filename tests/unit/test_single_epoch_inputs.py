from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from cosmodm_ops.astromatic import read_ldac, read_scamp_head, write_reference_ldac
from cosmodm_ops.cli import EXIT_BAD_INPUT, main
from cosmodm_ops.single_epoch.ccd import match_sky
from cosmodm_ops.single_epoch.inputs import BadInputError, exposure_info, image_hdus, read_refcat


def _triple(tmp_path: Path, **primary) -> tuple[Path, Path, Path]:
    hdr = fits.Header({"INSTRUME": "DECam", "EXPNUM": 12, "EXPTIME": 90.0, "MJD-OBS": 60000.2, "BAND": "r"})
    for k, v in primary.items():
        if v is None:
            del hdr[k]
        else:
            hdr[k] = v
    out = []
    for name, data in (("img", np.ones((20, 30), np.float32)), ("wgt", np.ones((20, 30), np.float32)),
                       ("msk", np.zeros((20, 30), np.int32))):
        p = tmp_path / f"{name}.fits"
        fits.HDUList([fits.PrimaryHDU(header=hdr), fits.ImageHDU(data, name="N4")]).writeto(p)
        out.append(p)
    return out[0], out[1], out[2]


def test_exposure_info_names_file_hdu_and_missing_key(tmp_path: Path):
    img, _, _ = _triple(tmp_path, EXPNUM=None)
    with pytest.raises(BadInputError, match=r"img\.fits HDU 0: header key 'EXPNUM' is missing"):
        exposure_info(fits.getheader(img, 0), img)


def test_unknown_camera_is_bad_input(tmp_path: Path):
    img, _, _ = _triple(tmp_path, INSTRUME="Hyper Suprime-Cam")
    with pytest.raises(BadInputError, match="INSTRUME.*not a known camera"):
        exposure_info(fits.getheader(img, 0), img)


def test_truncated_file_is_bad_input(tmp_path: Path):
    img, _, _ = _triple(tmp_path)
    data = img.read_bytes()
    img.write_bytes(data[: len(data) - 2000])
    with pytest.raises(BadInputError, match=r"img\.fits: cannot read FITS"):
        image_hdus(img)


def test_cli_exit_65_on_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    img, wgt, msk = _triple(tmp_path, EXPTIME=None)
    ref = tmp_path / "ref.fits"
    fits.BinTableHDU.from_columns([fits.Column("ra", "D", array=[1.0]), fits.Column("dec", "D", array=[2.0])]).writeto(ref)
    code = main(["single-epoch", "run", "--detrended", str(img), "--weight", str(wgt), "--mask", str(msk),
                 "--refcat", str(ref), "--out", str(tmp_path / "out"), "--workdir", str(tmp_path / "ram")])
    assert code == EXIT_BAD_INPUT
    assert "img.fits HDU 0: header key 'EXPTIME' is missing" in capsys.readouterr().err
    assert not list((tmp_path / "ram").glob("*/*")), "RAM disk cleaned"


def test_reference_ldac_round_trip_and_refcat_columns(tmp_path: Path):
    ra, dec = np.array([10.0, 10.1]), np.array([-5.0, -5.1])
    p = write_reference_ldac(tmp_path / "ref.ldac", ra, dec, ra_err_mas=np.array([3.6e3, 1.0]), mag=[17.0, 18.0])
    with fits.open(p) as h:
        assert [x.name for x in h] == ["PRIMARY", "LDAC_IMHEAD", "LDAC_OBJECTS"]
    t = read_ldac(p)
    np.testing.assert_allclose(t["X_WORLD"], ra)
    assert t["ERRA_WORLD"][0] == pytest.approx(1 / 1000, rel=1e-5)  # 3.6e3 mas = 1e-3 deg
    cat = tmp_path / "cat.fits"
    fits.BinTableHDU.from_columns([fits.Column("RA", "D", array=ra), fits.Column("DEC", "D", array=dec),
                                   fits.Column("mag_r", "E", array=[17.0, 18.0])]).writeto(cat)
    r = read_refcat(cat, band="r")
    assert r["mag_system"] == "r" and r["mag"][1] == 18.0


def test_scamp_head_with_utf8_is_read(tmp_path: Path):
    text = "COMMENT   caf\u00e9 SCAMP\nCRVAL1  =                 10.5 / x\nCRVAL2  =                 -3.0 / y\nEND\n"
    p = tmp_path / "a.head"
    p.write_bytes(text.encode("utf-8"))
    (h,) = read_scamp_head(p)
    assert h["CRVAL1"] == 10.5 and h["CRVAL2"] == -3.0


def test_match_sky_offsets_in_mas():
    ra = np.array([10.0, 20.0])
    dec = np.array([0.0, 0.0])
    i1, i2, dra, ddec = match_sky(ra + 0.1 / 3600, dec, ra, dec, 1.0)
    assert list(i1) == [0, 1] and list(i2) == [0, 1]
    np.testing.assert_allclose(dra, 100.0, rtol=1e-6)
    np.testing.assert_allclose(ddec, 0.0, atol=1e-6)


@pytest.mark.parametrize(("ra_c", "dec_c"), [(0.0, -30.0), (180.0, 0.0), (359.95, 60.0), (45.0, -88.9)])
def test_match_sky_finds_what_brute_force_finds_across_ra_wrap_and_poles(ra_c: float, dec_c: float):
    rng = np.random.default_rng(11)
    # references over a 2 x 2 degree field; objects in a 0.2 degree patch, half of them near a reference
    ref_dec = np.clip(dec_c + rng.uniform(-1, 1, 20000), -90, 90)
    ref_ra = (ra_c + rng.uniform(-1, 1, 20000) / max(np.cos(np.deg2rad(dec_c)), 0.05)) % 360
    patch = np.nonzero(np.abs(ref_dec - dec_c) < 0.1)[0][:400]
    ra1 = (ref_ra[patch] + rng.normal(0, 0.3, len(patch)) / 3600 / np.cos(np.deg2rad(ref_dec[patch]))) % 360
    dec1 = ref_dec[patch] + rng.normal(0, 0.3, len(patch)) / 3600
    ra1 = np.r_[ra1, (ra_c + rng.uniform(-0.1, 0.1, 200)) % 360]
    dec1 = np.r_[dec1, dec_c + rng.uniform(-0.05, 0.05, 200)]
    i1, i2, _, _ = match_sky(ra1, dec1, ref_ra, ref_dec, 1.0)

    def unit(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        r, d = np.deg2rad(ra), np.deg2rad(dec)
        return np.c_[np.cos(d) * np.cos(r), np.cos(d) * np.sin(r), np.sin(d)]

    sep = np.rad2deg(np.arccos(np.clip(unit(ra1, dec1) @ unit(ref_ra, ref_dec).T, -1, 1))) * 3600
    best = sep.argmin(axis=1)
    hit = sep[np.arange(len(ra1)), best] <= 1.0
    assert hit.sum() >= 350
    assert list(i1) == list(np.nonzero(hit)[0])
    assert list(i2) == list(best[hit])
