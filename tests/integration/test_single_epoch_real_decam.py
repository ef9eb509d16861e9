"""The detrended path end to end on a real DECam Community Pipeline cutout (N2 of exposure 630780)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cosmodm_ops.astromatic import read_ldac
from cosmodm_ops.cli import EXIT_OK, main
from cosmodm_ops.fits import file_sha256, read_image
from cosmodm_ops.manifest import read_manifest
from cosmodm_ops.single_epoch.ccd import match_sky
from cosmodm_ops.single_epoch.inputs import read_refcat
from tests.support import need_binary, real_file

pytestmark = pytest.mark.astromatic

STEM = "legacypipe/c4d_170316_062107_{}_z_ls9.N2.fits"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    need_binary("source-extractor", "psfex", "scamp")
    img, wgt, msk = (real_file(STEM.format(k)) for k in ("ooi", "oow", "ood"))
    ref = real_file("legacypipe/chunk-03586.fits")
    out = tmp_path_factory.mktemp("se_real")
    ram = Path("/dev/shm/cosmodm")  # site 'local' ramdisk.path
    argv = ["single-epoch", "run", "--detrended", str(img), "--weight", str(wgt), "--mask", str(msk),
            "--refcat", str(ref), "--out", str(out / "run"), "--jobs", "1"]
    assert main(argv) == EXIT_OK
    assert not list(ram.glob("se630780.*")), "the RAM-disk folder is removed"
    (out / "argv.json").write_text(json.dumps(argv))
    return out


def test_manifest_lists_every_product_with_checksums(run_dir: Path):
    m = read_manifest(run_dir / "run" / "manifest.json")
    kinds = sorted(p.kind for p in m.products)
    assert kinds == ["catalog", "image", "mask", "psf", "qa", "thumbnail", "weight"]
    for p in m.products:
        path = run_dir / "run" / p.path
        assert file_sha256(path) == p.sha256 and path.stat().st_size == p.size
        assert p.tags["expnum"] == 630780 and p.tags["band"] == "z"
    assert {i.role for i in m.inputs} == {"image", "weight", "mask", "refcat"}
    assert m.versions["source-extractor"] == "2.25.0" and m.versions["psfex"] and m.versions["git_commit"]
    assert m.config_hash and m.bytes["ramdisk"] > 0 and m.bytes["output"] > 0
    assert {"sextractor_pass1", "psfex", "sextractor_pass2"} <= set(m.timings)
    assert [(u.ccd, u.state) for u in m.units] == [(33, "ok")]


def test_qa_keeps_input_wcs_and_stars_agree_with_gaia(run_dir: Path):
    qa = json.loads((run_dir / "run" / "qa.json").read_text())
    assert qa["exposure"]["astrometry"] == "input WCS kept"
    assert "SCAMP not run" in qa["exposure"]["astrometry_reason"]
    (ccd,) = qa["ccds"]
    v = ccd["values"]
    # the CP reports FWHM 3.69 px = 0.97 arcsec for this CCD
    assert 0.85 < v["fwhm_arcsec"] < 1.15
    assert v["astrom_matches"] >= 2 and v["astrom_max_offset_mas"] < 200.0
    assert v["zeropoint_1s"] is None and "gaia_g" in v["zeropoint_1s_reason"]
    # independent check from the catalog product itself
    cat = read_ldac(run_dir / "run" / "des_00630780_z_ccd33_cat.fits")
    ref = read_refcat(real_file("legacypipe/chunk-03586.fits"), mjd_obs=57828.26)
    i1, _, dra, ddec = match_sky(cat["ALPHAWIN_J2000"], cat["DELTAWIN_J2000"], ref["ra"], ref["dec"], 1.0)
    assert len(i1) >= 2 and np.all(np.hypot(dra, ddec) < 200.0)


def test_image_is_in_electrons_with_data_model_header(run_dir: Path):
    data, hdr = read_image(run_dir / "run" / "des_00630780_z_ccd33_image.fits.fz")
    raw, _ = read_image(real_file(STEM.format("ooi")), ext=1)
    gain = 0.5 * (3.87047534931607 + 3.88300553808994)
    # RICE q=4 adds about 7% of the sky noise per pixel; medians agree far better
    assert np.median(data) == pytest.approx(gain * np.median(raw), rel=1e-3)
    for key in ("EXPNUM", "CCDNUM", "BAND", "EXPTIME", "MJD-OBS", "GAIN", "RDNOISE", "SATURATE", "CTYPE1", "PV1_1"):
        assert key in hdr, key
    assert hdr["GAIN"] == 1.0 and hdr["CCDNUM"] == 33


def test_rerun_skips_ccds_whose_outputs_match(run_dir: Path, tmp_path: Path):
    argv = json.loads((run_dir / "argv.json").read_text())
    before = read_manifest(run_dir / "run" / "manifest.json")
    assert main(argv) == EXIT_OK
    after = read_manifest(run_dir / "run" / "manifest.json")
    assert [(u.ccd, u.state) for u in after.units] == [(33, "skipped")]
    assert {p.path: p.sha256 for p in after.products if p.kind != "qa"} == \
        {p.path: p.sha256 for p in before.products if p.kind != "qa"}
