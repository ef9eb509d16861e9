"""``cosmodm coadd run`` on real DECam data: CP cutouts through the single-epoch pipeline, then the coadd.

The only real CCD triple here is one 245 x 251 cutout (N2 of exposure 630780, z band). Four
"exposures" are made from it: each a crop shifted by a few pixels (WCS adjusted), with
independent extra noise drawn from its weight map and a known flux factor (a zeropoint
offset of -2.5 log10 f). They go through ``cosmodm single-epoch run --detrended``, into a
temporary SQLite archive, and the fourth is quarantined before the coadd.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from cosmodm_ops.cli import EXIT_BAD_INPUT, EXIT_OK, main
from tests.support import need_binary, real_file

pytestmark = pytest.mark.astromatic

STEM = "legacypipe/c4d_170316_062107_{}_z_ls9.N2.fits"
TILE = "CUT630780"
#: expnum, flux factor, shift (dx, dy) in pixels; 900004 is quarantined; in 900005 the brightest star is 15% brighter
EXPOSURES = [(900001, 1.00, 0, 0), (900002, 0.80, 3, 2), (900003, 1.30, 5, 4), (900004, 1.10, 1, 1),
             (900005, 0.90, 0, 0)]
QUARANTINED = 900004
NONGREY = 900005
CROP = (240, 236)  # ny, nx


def _make_exposure(folder: Path, expnum: int, factor: float, dx: int, dy: int, seed: int,
                   boost: tuple[float, float, float] | None = None) -> dict[str, Path]:
    """One exposure; ``boost=(x, y, f)`` multiplies the light above the sky within 12 pixels of (x, y) by f."""
    from astropy.io import fits

    rng = np.random.default_rng(seed)
    out = {}
    with fits.open(real_file(STEM.format("oow"))) as hw:
        w = hw[1].data.astype(np.float64)
    ny, nx = CROP
    sl = (slice(dy, dy + ny), slice(dx, dx + nx))
    noise = np.where(w > 0, rng.normal(0.0, 1.0, w.shape) / np.sqrt(np.where(w > 0, w, 1.0)), 0.0)
    for kind in ("ooi", "oow", "ood"):
        with fits.open(real_file(STEM.format(kind))) as hdul:
            prim = hdul[0].header.copy()
            prim["EXPNUM"] = expnum
            hdr = hdul[1].header.copy()
            data = hdul[1].data
            if kind == "ooi":
                data = data + noise
                if boost is not None:
                    bx, by, bf = boost
                    yy, xx = np.mgrid[0 : data.shape[0], 0 : data.shape[1]]
                    near = np.hypot(xx - bx, yy - by) <= 12
                    sky = np.median(data[w > 0])
                    data = np.where(near, sky + (data - sky) * bf, data)
                data = (data * factor).astype(np.float32)
            elif kind == "oow":
                data = (data / 2.0 / factor**2).astype(np.float32)  # the variance doubled by the added noise
            hdr["CRPIX1"] = hdr["CRPIX1"] - dx
            hdr["CRPIX2"] = hdr["CRPIX2"] - dy
            path = folder / f"c4d_{expnum}_{kind}_z.fits"
            fits.HDUList([fits.PrimaryHDU(header=prim), fits.ImageHDU(data[sl], header=hdr, name="N2")]).writeto(path)
            out[kind] = path
    return out


def _tile_yaml(folder: Path) -> tuple[Path, float, float]:
    from astropy.io import fits

    from cosmodm_ops.coadd.imageio import wcs_of as WCS

    with fits.open(real_file(STEM.format("ooi"))) as hdul:
        w = WCS(hdul[1].header)
        ny, nx = hdul[1].data.shape
    ra, dec = w.all_pix2world([(nx - 1) / 2], [(ny - 1) / 2], 0)
    path = folder / "tiling.yaml"
    path.write_text(f"tiling:\n  name: test-targets\n  kind: targets\n  pixel_scale: 0.263\n  targets:\n"
                    f"    - {{name: {TILE}, ra: {ra[0]:.6f}, dec: {dec[0]:.6f}, size_deg: 0.025}}\n")
    return path, float(ra[0]), float(dec[0])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    need_binary("source-extractor", "psfex", "SWarp")
    from cosmodm_ops.archive import Archive

    tmp = tmp_path_factory.mktemp("coadd_real")
    ref = real_file("legacypipe/chunk-03586.fits")
    archive = Archive(f"sqlite:///{tmp / 'archive.db'}", tmp / "archive")
    archive.init()
    se_dirs = {}
    boost = None
    for k, (expnum, factor, dx, dy) in enumerate(EXPOSURES):
        if expnum == NONGREY:  # the brightest star of the first exposure (0-based pixels)
            stars = _input_stars({"se": se_dirs}, EXPOSURES[0][0])
            first = stars[np.argmin(stars["MAG_PSF"])]
            boost = (float(first["XWIN_IMAGE"]) - 1, float(first["YWIN_IMAGE"]) - 1, 1.15)
        files = _make_exposure(tmp, expnum, factor, dx, dy, seed=k, boost=boost if expnum == NONGREY else None)
        se = tmp / f"se{expnum}"
        argv = ["single-epoch", "run", "--detrended", str(files["ooi"]), "--weight", str(files["oow"]),
                "--mask", str(files["ood"]), "--refcat", str(ref), "--out", str(se), "--jobs", "1",
]
        assert main(argv) == EXIT_OK
        archive.register_manifest(se / "manifest.json")
        se_dirs[expnum] = se
    archive.quarantine({"survey": "des", "expnum": QUARANTINED}, ["test: a bad exposure"])
    tiling, ra, dec = _tile_yaml(tmp)
    out = tmp / "coadd"
    base = ["--survey", "des", "--version", "v1", "--tiling", str(tiling), "--db", archive.db_url,
            "--root", str(archive.root), "--set", "coadd.min_stars_per_image=2",
            "--set", "coadd.photcal_floor_mag=0.01"]
    code = main(["coadd", "run", "--tile", TILE, "--band", "z", "--out", str(out), *base])
    return {"tmp": tmp, "archive": archive, "out": out, "code": code, "se": se_dirs, "tiling": tiling,
            "base": base, "ra": ra, "dec": dec}


def _read(path: Path):
    from astropy.io import fits

    with fits.open(path) as hdul:
        hdu = next(h for h in hdul if h.is_image and h.header.get("NAXIS", 0) == 2)
        return np.asarray(hdu.data, dtype=np.float64), hdu.header.copy()


def _input_stars(world: dict, expnum: int):
    from cosmodm_ops.astromatic import read_ldac

    (cat,) = sorted(world["se"][expnum].glob("*_cat.fits"))
    c = read_ldac(cat)
    bright = (c["FLAGS"] == 0) & (c["SNR_WIN"] > 50) & (np.abs(c["SPREAD_MODEL"]) < 0.003)
    return c[bright]


def test_run_succeeds_and_excludes_the_quarantined_exposure(world: dict):
    from cosmodm_ops.manifest import read_manifest

    assert world["code"] == EXIT_OK
    m = read_manifest(world["out"] / "manifest.json")
    used = {i.tags["expnum"] for i in m.inputs if not i.role.startswith("rejected_")}
    assert used == {900001, 900002, 900003}
    # the non-grey exposure was looked at (its catalog) and removed; its image was not coadded
    assert {(i.tags["expnum"], i.role) for i in m.inputs if i.role.startswith("rejected_")} == {
        (NONGREY, "rejected_catalog")}
    qa = json.loads((world["out"] / "qa.json").read_text())
    assert [s["name"] for s in qa["skipped"]] == ["00900004_c33"]
    assert "quarantined: test: a bad exposure" in qa["skipped"][0]["reason"]
    assert qa["summary"]["n_used"] == 3 and qa["summary"]["verdict"] == "pass"
    (removed,) = qa["removed"]
    assert removed["name"] == f"{NONGREY:08d}_c33"
    assert "repeatability" in removed["reason"] and "> 30 mmag" in removed["reason"]
    assert [im["used"] for im in qa["images"]] == [True, True, True, False]
    assert {c["name"]: c["verdict"] for c in qa["checks"]}["repeatability_mmag"] == "pass"
    assert set(m.timings) >= {"stars", "photcal", "psf", "homogenize", "swarp", "swarp_homog", "qa", "total"}


def test_manifest_checksums_match_files(world: dict):
    from cosmodm_ops.fits import file_sha256
    from cosmodm_ops.manifest import read_manifest

    m = read_manifest(world["out"] / "manifest.json")
    assert sorted(p.kind for p in m.products) == ["coadd", "coadd_homog", "coadd_homog_weight", "coadd_weight",
                                                  "qa", "report", "thumbnail"]
    for p in m.products:
        path = world["out"] / p.path
        assert file_sha256(path) == p.sha256 and path.stat().st_size == p.size
        assert p.tags["tile"] == TILE and p.tags["band"] == "z" and p.tags["stage"] == "coadd"
    for i in m.inputs:
        assert file_sha256(i.path) == i.sha256


def test_relative_zeropoints_recover_the_flux_factors(world: dict):
    """zp_k = 2.5 log10(f_k) - apcorr_k + const: each image's MAG_PSF carries its own aperture correction."""
    qa = json.loads((world["out"] / "qa.json").read_text())
    assert qa["images"][3]["zeropoint"] is None  # removed: no zeropoint
    zp = np.array([im["zeropoint"] for im in qa["images"][:3]])
    ap = np.array([json.loads((world["se"][e] / "qa.json").read_text())["ccds"][0]["values"]["apcorr_mag"]
                   for e, *_ in EXPOSURES[:3]])
    truth = 2.5 * np.log10([f for _, f, *_ in EXPOSURES[:3]]) - ap
    err = np.array([im["zeropoint_err"] for im in qa["images"][:3]])
    assert np.all(err < 0.01)
    # within 3 sigma of the reported errors (3 stars an image, 10 mmag floor per measurement)
    assert np.all(np.abs((zp - zp.mean()) - (truth - truth.mean())) <= 3 * err)


def test_coadd_wcs_is_the_tiles_and_star_fluxes_match_the_scaled_inputs(world: dict):
    from cosmodm_ops.coadd.imageio import wcs_of as WCS
    from cosmodm_ops.coadd.tiling import load_tiling

    tile = load_tiling(world["tiling"]).tile(TILE)
    data, hdr = _read(world["out"] / f"{TILE}_z_coadd.fits.fz")
    assert data.shape == tile.shape and hdr["MAGZERO"] == 30.0 and hdr["NIMAGES"] == 3
    tw = tile.wcs()
    cw = WCS(hdr)
    np.testing.assert_allclose(cw.wcs.crval, tw.wcs.crval, atol=1e-9)
    np.testing.assert_allclose(cw.wcs.crpix, tw.wcs.crpix, atol=1e-6)
    np.testing.assert_allclose(cw.pixel_scale_matrix, tw.pixel_scale_matrix, rtol=1e-9, atol=1e-15)
    qa = json.loads((world["out"] / "qa.json").read_text())
    scales = {im["expnum"]: im["flxscale"] for im in qa["images"]}
    ref = _input_stars(world, 900001)
    assert len(ref) >= 2
    yy, xx = np.mgrid[0 : data.shape[0], 0 : data.shape[1]]
    for star in ref:
        x, y = cw.all_world2pix([star["ALPHAWIN_J2000"]], [star["DELTAWIN_J2000"]], 0)
        coadd_flux = data[(xx - x[0]) ** 2 + (yy - y[0]) ** 2 <= 10.0**2].sum()  # FLUX_APER[2]: 20 px diameter
        expected = []
        for e in (900001, 900002, 900003):
            s = _input_stars(world, e)
            d = np.hypot((s["ALPHAWIN_J2000"] - star["ALPHAWIN_J2000"]) * math.cos(math.radians(world["dec"])),
                         s["DELTAWIN_J2000"] - star["DELTAWIN_J2000"]) * 3600
            k = int(np.argmin(d))
            assert d[k] < 0.5
            expected.append(s["FLUX_APER"][k, 2] * scales[e])
        # the zeropoints put the inputs on one scale; what is left is the spread of the images' MAG_PSF
        # aperture corrections (each from 3 stars: up to 30 mmag apart here)
        assert np.std(expected) / np.mean(expected) < 0.03
        assert coadd_flux == pytest.approx(np.mean(expected), rel=0.03)


def test_homogenized_coadd_has_the_target_psf(world: dict):
    from cosmodm_ops.coadd.imageio import wcs_of as WCS
    from cosmodm_ops.coadd.psfhomog import psf_fwhm

    data, hdr = _read(world["out"] / f"{TILE}_z_coadd_homog.fits.fz")
    raw, _ = _read(world["out"] / f"{TILE}_z_coadd.fits.fz")
    assert hdr["PSFHOMOG"] is True
    target = hdr["PSF_FWHM"]
    qa = json.loads((world["out"] / "qa.json").read_text())
    assert target == pytest.approx(1.2 * qa["summary"]["psf_fwhm_in_median_arcsec"], rel=1e-3)
    w = WCS(hdr)
    measured, before = [], []
    for star in _input_stars(world, 900001):
        x, y = w.all_world2pix([star["ALPHAWIN_J2000"]], [star["DELTAWIN_J2000"]], 0)
        xi, yi = round(x[0]), round(y[0])
        measured.append(psf_fwhm(data[yi - 12 : yi + 13, xi - 12 : xi + 13]) * 0.263)
        before.append(psf_fwhm(raw[yi - 12 : yi + 13, xi - 12 : xi + 13]) * 0.263)
    # the stars of the homogenized coadd have the target FWHM; those of the plain coadd are sharper
    np.testing.assert_allclose(measured, target, rtol=0.04)
    assert np.median(before) < 0.95 * target
    assert qa["summary"]["psf_fwhm_spread_after"] < 0.02


def test_registered_coadd_links_to_its_inputs(world: dict):
    archive = world["archive"]
    ids = archive.register_manifest(world["out"] / "manifest.json")
    assert len(ids) == 7  # six products and the survey pages' thumbnail
    (coadd,) = archive.find(survey="des", tile=TILE, band="z", kind="coadd", version="v1")
    (homog,) = archive.find(survey="des", tile=TILE, band="z", kind="coadd_homog", version="v1")
    up = archive.lineage(coadd["id"], direction="up", depth=1)
    linked = {(up["products"][e["input_id"]]["expnum"], e["role"]) for e in up["edges"] if e["input_id"]}
    assert linked == {(e, r) for e in (900001, 900002, 900003) for r in ("image", "weight", "catalog")}
    (odd,) = archive.find(survey="des", expnum=NONGREY, kind="image")
    assert archive.lineage(odd["id"], direction="down", depth=1)["edges"] == []
    up_h = archive.lineage(homog["id"], direction="up", depth=1)
    assert {e["role"] for e in up_h["edges"]} == {"image", "weight", "psf", "catalog"}
    # and downwards: an input image knows the coadds made from it
    (img,) = archive.find(survey="des", expnum=900002, kind="image")
    down = archive.lineage(img["id"], direction="down", depth=1)
    made = {down["products"][e["product_id"]]["kind"] for e in down["edges"]}
    assert made == {"coadd", "coadd_weight", "coadd_homog", "coadd_homog_weight", "qa", "report", "thumbnail"}
    rows = archive.qa_results(tile=TILE, check_name="repeatability_mmag")
    assert rows and rows[0]["verdict"] == "pass"
    # nothing of the quarantined exposure
    (bad,) = archive.find(survey="des", expnum=QUARANTINED, kind="image")
    assert archive.lineage(bad["id"], direction="down", depth=1)["edges"] == []


def test_no_inputs_is_bad_input(world: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    code = main(["coadd", "run", "--tile", TILE, "--band", "g", "--out", str(tmp_path / "g"), *world["base"]])
    assert code == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "no accepted inputs" in err and TILE in err and "band g" in err
    assert not (tmp_path / "g" / "manifest.json").exists()


def test_the_tile_workflow_files_and_gates_the_band(world: dict, monkeypatch: pytest.MonkeyPatch):
    """What the tile_coadd DAG's register and qa_gate tasks do with this job's output folder."""
    from cosmodm_ops.workflows.coadd import TilePlan, calibration_command, gate_band, register_band

    archive = world["archive"]
    monkeypatch.setenv("COSMODM_DB", archive.db_url)
    monkeypatch.setenv("COSMODM_ARCHIVE_ROOT", str(archive.root))
    from dataclasses import asdict

    plan = asdict(TilePlan(tile=TILE, bands=["z"], survey="des", site="local", version="v1"))
    registered = register_band(plan, "z", str(world["out"]), {"dag_id": "tile_coadd", "run_id": "r1"})
    assert registered["products"] == 7
    verdict = gate_band(plan, "z", registered)
    assert verdict["accepted"] and verdict["reasons"] == []
    assert verdict["summary"]["n_used"] == 3 and verdict["summary"]["band"] == "z"
    assert not archive.is_quarantined({"survey": "des", "tile": TILE, "band": "z", "version": "v1"})
    assert calibration_command(plan) is None  # one band: nothing to calibrate across bands


def test_run_from_manifests_matches_the_archive_run(world: dict, tmp_path: Path):
    from cosmodm_ops.manifest import read_manifest

    base = [a for a in world["base"] if a not in ("--db", world["archive"].db_url, "--root", str(world["archive"].root))]
    manifests = [str(world["se"][e] / "manifest.json") for e in (900001, 900002, 900003)]
    out = tmp_path / "m"
    assert main(["coadd", "run", "--tile", TILE, "--band", "z", "--out", str(out), *base,
                 "--manifests", *manifests]) == EXIT_OK
    a = json.loads((world["out"] / "qa.json").read_text())
    b = json.loads((out / "qa.json").read_text())
    za = {im["name"]: im["zeropoint"] for im in a["images"] if im["used"]}
    zb = {im["name"]: im["zeropoint"] for im in b["images"]}
    assert set(zb) == set(za)
    ma, mb = np.mean(list(za.values())), np.mean(list(zb.values()))  # gauge: the mean of the images used
    for k, v in za.items():
        assert zb[k] - mb == pytest.approx(v - ma, abs=2e-3)
    shas = {i.sha256 for i in read_manifest(out / "manifest.json").inputs}
    assert shas <= {i.sha256 for i in read_manifest(world["out"] / "manifest.json").inputs}


def test_an_image_broader_than_the_target_stays_out_of_the_homogenized_coadd(world: dict, tmp_path: Path):
    """Target = the median input FWHM: the broadest input cannot be convolved to it; the plain coadd keeps it."""
    base = [a for a in world["base"] if a not in ("--db", world["archive"].db_url, "--root", str(world["archive"].root))]
    manifests = [str(world["se"][e] / "manifest.json") for e in (900001, 900002, 900003)]
    out = tmp_path / "narrow"
    assert main(["coadd", "run", "--tile", TILE, "--band", "z", "--out", str(out), *base,
                 "--set", "coadd.psf_target_scale=1.0", "--manifests", *manifests]) == EXIT_OK
    qa = json.loads((out / "qa.json").read_text())
    target = qa["summary"]["psf_fwhm_target_arcsec"]
    fwhm = {im["name"]: im["fwhm_arcsec"] for im in qa["images"]}
    left_out = {s["name"] for s in qa["not_homogenized"]}
    assert max(fwhm, key=fwhm.get) in left_out and len(left_out) < len(fwhm)
    assert all(s["fwhm_max_arcsec"] > target and "broader than the homogenization target" in s["reason"]
               for s in qa["not_homogenized"])
    assert all(s["before"] <= target and s["image"] not in left_out for s in qa["psf_samples"])
    _, hdr = _read(out / f"{TILE}_z_coadd_homog.fits.fz")
    _, plain = _read(out / f"{TILE}_z_coadd.fits.fz")
    assert hdr["NIMAGES"] == 3 - len(left_out) and plain["NIMAGES"] == 3
    checks = {c["name"]: c for c in qa["checks"]}
    assert checks["n_images_not_homogenized"]["value"] == len(left_out)
    assert checks["psf_fwhm_spread_after"]["threshold"] == 0.02 and checks["psf_fwhm_spread_after"]["verdict"] == "pass"
