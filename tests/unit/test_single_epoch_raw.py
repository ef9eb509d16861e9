"""The raw path on tiny hand-built raw exposures (tests/unit/raw_factory.py): pixels vs truth, crosstalk,
mask, header, and bad input naming the file, HDU and key."""

from __future__ import annotations

from pathlib import Path

import fitsio
import numpy as np
import pytest

from cosmodm_ops.cli import EXIT_BAD_INPUT, main
from cosmodm_ops.single_epoch import raw as R
from cosmodm_ops.single_epoch.detrend import MASK_BITS
from cosmodm_ops.single_epoch.inputs import BadInputError
from tests.unit.raw_factory import make_exposure, spec_for, tiny_config


def _truth_chi2(exp, extname: str, res: dict) -> float:
    s, f = exp.truth[extname], exp.flat_true[extname]
    rn = res["readnoise"]
    var = (f * s + rn**2) / f**2  # D = flat / starflat = F: the raw-frame electrons are F x S
    good = res["mask"] == 0
    return float(np.mean(((res["image"] - s) ** 2 / var)[good]))


def test_detrended_pixels_match_truth_within_noise(tmp_path: Path):
    exp = make_exposure(tmp_path, seed=11)
    for extname in exp.truth:
        res = R.ingest_and_detrend(spec_for(exp, extname))
        assert res["image"].dtype == np.float32 and res["weight"].dtype == np.float32
        assert res["mask"].dtype == np.int32
        assert abs(_truth_chi2(exp, extname, res) - 1.0) < 0.05, extname
        # the weight map (sky + read noise) is right where the truth is sky alone
        sky_only = (np.abs(exp.truth[extname] - 400.0) < 0.5) & (res["mask"] == 0)
        chi2_w = float(np.mean(((res["image"] - exp.truth[extname]) ** 2 * res["weight"])[sky_only]))
        assert abs(chi2_w - 1.0) < 0.05, extname
        assert abs(float(np.median((res["image"] - exp.truth[extname])[res["mask"] == 0]))) < 1.0


def test_crosstalk_ghosts_are_suppressed_twentyfold_within_and_across_ccds(tmp_path: Path):
    # a bright star on S1's amplifier A (the right half: S CCDs are flipped) leaks into 25B (mirrored)
    # and into 26A = S2's right half (same amplifier name: same orientation)
    star = {"S1": [(100.0, 80.0, 110000.0)]}
    # decam-mini's coefficients x 5, so that the ghosts stand well above the raw's integer rounding
    # (0.3 ADU rms per pixel, which does not cancel between the two raws)
    base = tiny_config().camera.crosstalk
    cfg = tiny_config(crosstalk=[{"victim": t.victim, "source": t.source, "coeff": 5 * t.coeff} for t in base])
    kw = {"seed": 5, "extra_stars": star, "cfg": cfg}
    with_xt = make_exposure(tmp_path / "xt", crosstalk=True, **kw)
    without = make_exposure(tmp_path / "noxt", crosstalk=False, **kw)
    no_corr_cfg = tiny_config(crosstalk=[])
    uncorrected = {}
    corrected = {}
    clean = {}
    no_corr = no_corr_cfg.camera.model_dump(mode="json")
    for name in ("S1", "S2"):
        corrected[name] = R.ingest_and_detrend(spec_for(with_xt, name))["image"]
        # the same raw without crosstalk, read without correction: noise and everything else cancel
        clean[name] = R.ingest_and_detrend(dict(spec_for(without, name), camera=no_corr))["image"]
        uncorrected[name] = R.ingest_and_detrend(dict(spec_for(with_xt, name), camera=no_corr))["image"]
    half = 64
    ghosts = {"25B": ("S1", 80, half - 1 - (100 - half)), "26A": ("S2", 80, 100)}
    for label, (name, y, x) in ghosts.items():
        box = (slice(y - 6, y + 7), slice(x - 6, x + 7))
        before = float(np.sum((uncorrected[name] - clean[name])[box]))
        after = float(np.sum((corrected[name] - clean[name])[box]))
        assert before > 200.0, (label, before)  # a real ghost (e-)
        assert abs(after) * 20 <= abs(before), (label, before, after)


def test_nonlinear_crosstalk_above_the_onset_is_removed(tmp_path: Path):
    xt = tmp_path / "xtalk.txt"
    # N1 (32): 32A <- 32B linear below 20000 ADU, polynomial above (DECam's file format)
    xt.write_text("# victim source x x_err src_nl p1 p2 p3\n"
                  "ccd32A ccd32B 1.0e-03 1e-5 2.0e+04 1.5e-03 -1.0e-08 0.0\n")
    cfg = tiny_config(crosstalk=[], crosstalk_file=str(xt))
    terms = R.crosstalk_terms(cfg.camera)
    assert terms[0].nl_onset == 2e4 and terms[0].nl_poly == (1.5e-3, -1e-8, 0.0)
    s = np.array([1000.0, 30000.0], np.float32)
    np.testing.assert_allclose(R.crosstalk_signal(s, terms[0]), [1.0, 1.5e-3 * 3e4 - 1e-8 * 9e8], rtol=1e-5)
    star = {"N1": [(100.0, 50.0, 150000.0)]}  # on amp B of N1 (the right half: N CCDs are not flipped)
    a = make_exposure(tmp_path / "a", cfg=cfg, crosstalk=True, seed=2, extra_stars=star)
    b = make_exposure(tmp_path / "b", cfg=cfg, crosstalk=False, seed=2, extra_stars=star)
    img_a = R.ingest_and_detrend(spec_for(a, "N1"))["image"]
    img_b = R.ingest_and_detrend(dict(spec_for(b, "N1"), camera=tiny_config(crosstalk=[]).camera.model_dump(
        mode="json")))["image"]
    lin_only = spec_for(a, "N1")
    lin_only["camera"] = tiny_config(crosstalk=[{"victim": "32A", "source": "32B", "coeff": 1.0e-3}]).camera.model_dump(
        mode="json")
    img_lin = R.ingest_and_detrend(lin_only)["image"]
    box = (slice(44, 57), slice(63 - (100 - 64) - 6, 63 - (100 - 64) + 7))
    ghost_nl = float(np.sum((img_lin - img_b)[box]))  # what the linear term alone leaves
    after = float(np.sum((img_a - img_b)[box]))
    assert abs(ghost_nl) > 100.0
    assert abs(after) * 20 <= abs(ghost_nl)


def test_mask_flags_saturation_bleed_bad_columns_edges_and_zero_weight(tmp_path: Path):
    star = {"N2": [(30.0, 100.0, 400000.0)]}  # saturates amp A of N2 (left half) at 20000 ADU
    exp = make_exposure(tmp_path, seed=4, extra_stars=star, saturate={"N2": (20000.0, 40000.0)})
    res = R.ingest_and_detrend(spec_for(exp, "N2"))
    m, w = res["mask"], res["weight"]
    sat = (m & MASK_BITS["SATURATED"]) != 0
    assert sat[100, 30] and sat.sum() >= 9
    rows = np.nonzero(sat[:, 30])[0]
    assert m[rows.max() + 1, 30] & MASK_BITS["BLEED"] and m[rows.min() - 1, 30] & MASK_BITS["BLEED"]
    bad_col = 20 + 33 % 7
    assert (m[:, bad_col] & MASK_BITS["BADPIX"]).all()
    assert (m[0, :] & MASK_BITS["EDGE"]).all() and (m[:, -1] & MASK_BITS["EDGE"]).all()
    zero = (m & (MASK_BITS["BADPIX"] | MASK_BITS["SATURATED"] | MASK_BITS["BLEED"] | MASK_BITS["EDGE"])) != 0
    assert (w[zero] == 0).all() and (w[~zero] > 0).all()
    # SATURATE (e-) lies below every saturated pixel's detrended value
    assert res["saturate"] <= float(res["image"][sat].min()) * 1.001
    assert not (m & MASK_BITS["CR"]).any()  # stars are not cosmic rays


def test_cosmic_rays_are_found(tmp_path: Path):
    exp = make_exposure(tmp_path, seed=8)
    with fitsio.FITS(str(exp.raw), "rw") as f:
        data = f["N1"].read()
        data[70, 30 + 6 + 20] += 3000  # trimmed (30, 70) on amp A of N1 (not flipped)
        f["N1"].write(data)
    res = R.ingest_and_detrend(spec_for(exp, "N1"))
    assert res["mask"][70, 30] & MASK_BITS["CR"]
    assert int(((res["mask"] & MASK_BITS["CR"]) != 0).sum()) <= 5


def test_header_of_the_detrended_ccd(tmp_path: Path):
    exp = make_exposure(tmp_path, seed=1)
    res = R.ingest_and_detrend(spec_for(exp, "S2"))
    h = res["header"]
    assert h["GAIN"] == 1.0 and h["BUNIT"] == "electrons" and h["CCDNUM"] == 26 and h["DETPOS"] == "S2"
    assert h["RDNOISE"] == pytest.approx(6.15) and h["SATURATE"] == pytest.approx(res["saturate"])
    assert h["EXPNUM"] == 901234 and h["BAND"] == "g" and h["CTYPE1"] == "RA---TAN" and h["CD2_2"] == 7.3e-5
    assert h["FLATFIL"] == "flat_g.fits" and h["STARFIL"] == "starflat_g.fits"
    for key in ("GAINA", "SATURATA", "RDNOISEB", "BZERO"):
        assert key not in h
    hist = " ".join(str(v) for v in h["HISTORY"])
    assert "cross-CCD crosstalk 26A<-25A" in hist and "star flat" in hist


def test_missing_starflat_is_logged_and_recorded(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    exp = make_exposure(tmp_path, seed=1, starflat=False)
    _, _, _, calib_inputs = R.raw_exposure_plan(exp.raw, exp.calib, exp.cfg)
    assert [r for r, _ in calib_inputs] == ["bias", "flat", "bpm"]
    with caplog.at_level("WARNING"):
        res = R.ingest_and_detrend(spec_for(exp, "N1"))
    assert res["header"]["STARFIL"] == "none" and "starflat_g" in caplog.text


def test_detrend_raw_ccd_does_not_modify_its_inputs(tmp_path: Path):
    exp = make_exposure(tmp_path, seed=1)
    with fitsio.FITS(str(exp.raw)) as f:
        raw = f["N2"].read()
    before = raw.copy()
    sec = R._sections(exp.cfg.camera, "N2")
    bias = exp.bias["N2"].copy()
    flat = np.ones_like(bias)
    out = R.detrend_raw_ccd(R.RawCcd(raw=raw, sec=sec, gain=(4.0, 4.0), readnoise=(6.0, 6.0),
                                     saturation=(4e4, 4e4), xtalk=(1e-3, 1e-3)), R.RawCalib(bias=bias, flat=flat))
    np.testing.assert_array_equal(raw, before)
    np.testing.assert_array_equal(bias, exp.bias["N2"])
    assert not np.shares_memory(out.image, raw)


def test_plan_lists_ccds_and_calib_and_reads_compressed_raw(tmp_path: Path):
    exp = make_exposure(tmp_path, seed=2, compress=True)
    assert exp.raw.name.endswith(".fits.fz")
    hdus, info, primary, calib_inputs = R.raw_exposure_plan(exp.raw, exp.calib, exp.cfg)
    assert [n for _, n in hdus] == ["S1", "S2", "N1", "N2"] and [i for i, _ in hdus] == [1, 2, 3, 4]
    assert (info.camera, info.expnum, info.band, info.night) == ("decam-mini", 901234, "g", "2025-11-22")
    assert primary["CAMERA"] == "decam-mini"
    assert [r for r, _ in calib_inputs] == ["bias", "flat", "starflat", "bpm"]


# ---- bad input: the message names the file, the HDU and the key


def _expect_bad(exp, *needles: str) -> str:
    with pytest.raises(BadInputError) as err:
        R.raw_exposure_plan(exp.raw, exp.calib, exp.cfg)
    for n in needles:
        assert n in str(err.value), (n, str(err.value))
    return str(err.value)


def test_missing_header_key_names_file_hdu_and_key(tmp_path: Path):
    exp = make_exposure(tmp_path, seed=1)
    with fitsio.FITS(str(exp.raw), "rw") as f:
        f["N1"].delete_key("SATURATB")
    _expect_bad(exp, str(exp.raw), "HDU 3 (N1)", "'SATURATB'")


def test_truncated_raw_names_file_and_hdu(tmp_path: Path):
    exp = make_exposure(tmp_path, seed=1)
    size = exp.raw.stat().st_size
    with open(exp.raw, "r+b") as fh:
        fh.truncate(size - 20000)
    msg = _expect_bad(exp, str(exp.raw))
    assert "HDU" in msg and ("truncated" in msg or "corrupt" in msg)


def test_wrong_raw_shape_missing_ccd_and_missing_calib(tmp_path: Path):
    exp = make_exposure(tmp_path / "a", seed=1)
    other = tiny_config(ccd_nx=96)
    exp_wrong = type(exp)(raw=exp.raw, calib=exp.calib, cfg=other, truth={}, flat_true={}, bias={})
    _expect_bad(exp_wrong, "HDU 1 (S1)", "'NAXIS2','NAXIS1'", "expected the raw shape")
    (exp.calib / "flat_g.fits").unlink()
    _expect_bad(exp, "flat_g.fits", "band 'g'")
    exp2 = make_exposure(tmp_path / "b", seed=1)
    with fitsio.FITS(str(exp2.calib / "bpm.fits"), "rw") as f:
        f["N2"].write_key("EXTNAME", "N9")
    _expect_bad(exp2, "bpm.fits", "HDU 'N2'", "'EXTNAME'")
    exp3 = make_exposure(tmp_path / "c", seed=1)
    with fitsio.FITS(str(exp3.raw), "rw") as f:
        f["S2"].write_key("EXTNAME", "XX")
    _expect_bad(exp3, str(exp3.raw), "HDU 'S2'", "'EXTNAME'")


def test_cli_exits_65_on_unknown_camera_and_on_truncated_raw(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    exp = make_exposure(tmp_path / "a", seed=1)
    with fitsio.FITS(str(exp.raw), "rw") as f:
        f[0].write_key("CAMERA", "hubble-wfc3")
    # the raw is checked before the reference catalog is read: any readable FITS file will do here
    refcat = tmp_path / "refcat.fits"
    fitsio.write(str(refcat), np.zeros(1, dtype=[("ra", "f8"), ("dec", "f8")]))
    argv = ["single-epoch", "run", "--exposure", str(exp.raw), "--calib", str(exp.calib), "--refcat",
            str(refcat), "--out", str(tmp_path / "out"), "--workdir", str(tmp_path / "ram")]
    assert main(argv) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert str(exp.raw) in err and "HDU 0" in err and "hubble-wfc3" in err and "'INSTRUME'/'CAMERA'" in err
    # the real decam-mini layout, truncated
    full = make_exposure(tmp_path / "b", seed=1, cfg=tiny_config(ccd_nx=512, ccd_ny=1024, overscan=50,
                                                                  postscan_rows=50))
    size = full.raw.stat().st_size
    with open(full.raw, "r+b") as fh:
        fh.truncate(size // 2)
    argv[3], argv[5] = str(full.raw), str(full.calib)
    assert main(argv) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert str(full.raw) in err and "HDU" in err


def test_decam_camera_tables_give_62_ccds_and_the_real_crosstalk_terms():
    from cosmodm_ops.config import load_config
    from tests.support import real_file

    real_file("obs_decam/DECam_xtalk_20130606.txt")
    cam = load_config("des", camera="decam").camera
    ccds = R.camera_ccds(cam)
    assert len(ccds) == 62 and ccds[0] == ("S29", 1) and ("N31", 62) in ccds
    terms = R.crosstalk_terms(cam)
    assert len(terms) == 249
    cross = [t for t in terms if t.victim[0] != t.source[0]]
    nonlin = [t for t in terms if t.nl_poly]
    assert len(cross) == 126 and nonlin and all(t.victim[0] == t.source[0] for t in nonlin)
    t = next(t for t in terms if t.victim == (25, "B") and t.source == (25, "A"))
    assert t.coeff == 1.34e-4 and t.nl_onset == pytest.approx(40781.54)
    # linear below the onset, the file's polynomial in the source signal above it
    below, above = R.crosstalk_signal(np.array([1000.0, 42000.0], np.float32), t)
    assert below == pytest.approx(0.134)
    assert above == pytest.approx(1.537540e-04 * 42000 - 6.980507e-08 * 42000**2 + 5.963848e-12 * 42000**3, rel=1e-5)


def test_star_flat_and_pixel_area_multiply_the_flat_fielded_image(tmp_path: Path):
    exp = make_exposure(tmp_path, seed=1, noise=False, crosstalk=False, starflat=False)
    with fitsio.FITS(str(exp.raw)) as f:
        raw = f["N2"].read()
    sec = R._sections(exp.cfg.camera, "N2")
    ny, nx = exp.bias["N2"].shape
    flat = np.ones((ny, nx), np.float32)
    area = np.ones((ny, nx), np.float32)
    area[:, nx // 2:] = 1.02
    starflat = np.full((ny, nx), 0.97, np.float32)
    ccd = R.RawCcd(raw=raw, sec=sec, gain=(4.44, 4.21), readnoise=(6.6, 6.5), saturation=(45500, 43300))
    base = R.detrend_raw_ccd(ccd, R.RawCalib(bias=exp.bias["N2"], flat=flat))
    both = R.detrend_raw_ccd(ccd, R.RawCalib(bias=exp.bias["N2"], flat=flat, starflat=starflat, pixel_area=area))
    ratio = np.median(both.image[:, 10:50] / base.image[:, 10:50]), np.median(both.image[:, -50:-10] / base.image[:,
                                                                                                           -50:-10])
    assert ratio == pytest.approx((0.97, 0.97 * 1.02), rel=1e-5)
