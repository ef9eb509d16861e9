"""``cosmodm coadd calibrate`` on synthetic homogenized coadds with known zeropoint offsets.

Four bands of one tile, made as ``cosmodm coadd run`` leaves them (``<dir>/<band>/manifest.json``
with the ``coadd_homog`` products): stars drawn from the Covey et al. stellar locus, observed with
per-band zeropoint errors (the truth), a few galaxies, a Moffat PSF and Gaussian noise; J of
70% of the stars in a photometric reference catalog. The calibration must find the offsets.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cosmodm_ops.cli import EXIT_BAD_INPUT, EXIT_OK, main
from tests.support import need_binary

pytestmark = pytest.mark.astromatic

TILE = "SYNTILE"
RA0, DEC0, SCALE, NPIX = 50.0, -30.0, 0.263, 640
FWHM_PX, BETA, SIGMA = 4.5, 2.5, 3.0
OFFSETS = {"g": 0.12, "r": -0.07, "i": 0.05, "z": 0.10}


def _stamp(dx: float, dy: float, fwhm: float, half: int = 20) -> np.ndarray:
    from cosmodm_ops.coadd.synthetic import moffat_image

    return moffat_image((2 * half + 1, 2 * half + 1), half + dx, half + dy, fwhm, BETA)


def _render(shape: tuple[int, int], xs: np.ndarray, ys: np.ndarray, flux: np.ndarray, fwhm: np.ndarray
            ) -> np.ndarray:
    img = np.zeros(shape)
    half = 20
    for x, y, f, fw in zip(xs, ys, flux, fwhm, strict=True):
        xi, yi = round(x), round(y)
        img[yi - half : yi + half + 1, xi - half : xi + half + 1] += f * _stamp(x - xi, y - yi, fw, half)
    return img


def _make_tile(root: Path) -> dict:
    from astropy.io import fits

    from cosmodm_ops.coadd.synthetic import locus_stars
    from cosmodm_ops.coadd.tiling import target_tile
    from cosmodm_ops.fits import file_sha256, write_image
    from cosmodm_ops.manifest import Manifest, ManifestProduct, write_manifest
    from cosmodm_ops.model import Tags

    rng = np.random.default_rng(7)
    tile = target_tile(TILE, RA0, DEC0, NPIX * SCALE / 3600.0, SCALE, "syn")
    assert tile.npix == NPIX
    grid = np.arange(40, NPIX - 40, 44)
    gx, gy = np.meshgrid(grid, grid)
    xs = gx.ravel() + rng.uniform(-8, 8, gx.size)
    ys = gy.ravel() + rng.uniform(-8, 8, gx.size)
    n_gal = 25
    is_gal = np.zeros(len(xs), bool)
    is_gal[rng.choice(len(xs), n_gal, replace=False)] = True
    n_star = int((~is_gal).sum())
    mags, _, truth = locus_stars(n_star, OFFSETS, noise=0.0, intrinsic=0.02, j_fraction=0.7, seed=3)
    w = tile.wcs()
    ra, dec = w.all_pix2world(xs, ys, 0)
    header = tile.header()
    header["PSF_FWHM"] = FWHM_PX * SCALE
    header["PSF_BETA"] = BETA
    for band in OFFSETS:
        m = np.full(len(xs), np.nan)
        m[~is_gal] = mags[band]
        m[is_gal] = rng.uniform(17.5, 19.5, n_gal)
        flux = 10 ** (-0.4 * (m - 30.0))
        fwhm = np.where(is_gal, 3.0 * FWHM_PX, FWHM_PX)
        img = _render((NPIX, NPIX), xs, ys, flux, fwhm) + rng.normal(0, SIGMA, (NPIX, NPIX))
        folder = root / band
        folder.mkdir(parents=True)
        im = write_image(folder / f"{TILE}_{band}_coadd_homog.fits.fz", img.astype(np.float32), header)
        wt = write_image(folder / f"{TILE}_{band}_coadd_homog_weight.fits.fz",
                         np.full((NPIX, NPIX), 1 / SIGMA**2, np.float32), header)
        tags = Tags(survey="des", camera="decam", stage="coadd", version="v1", kind="coadd_homog", tile=TILE,
                    band=band)
        prods = [ManifestProduct(kind=k, tags=tags.with_(kind=k).to_dict(), path=p.name, sha256=file_sha256(p),
                                 size=p.stat().st_size) for k, p in (("coadd_homog", im), ("coadd_homog_weight", wt))]
        write_manifest(Manifest(tags={"survey": "des", "stage": "coadd", "version": "v1", "tile": TILE, "band": band},
                                products=prods), folder / "manifest.json")
    j = mags["J"]
    has = np.isfinite(j)
    cols = [fits.Column("ra", "D", array=ra[~is_gal][has]), fits.Column("dec", "D", array=dec[~is_gal][has]),
            fits.Column("mag_J", "E", array=j[has])]
    refcat = root / "photometric.fits"
    fits.BinTableHDU.from_columns(cols).writeto(refcat)
    tiling = root / "tiling.yaml"
    tiling.write_text(f"tiling:\n  name: syn\n  kind: targets\n  pixel_scale: {SCALE}\n  targets:\n"
                      f"    - {{name: {TILE}, ra: {RA0}, dec: {DEC0}, size_deg: {NPIX * SCALE / 3600.0!r}}}\n")
    return {"truth": truth, "refcat": refcat, "tiling": tiling, "n_star": n_star, "n_gal": n_gal}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    need_binary("source-extractor", "psfex")
    root = tmp_path_factory.mktemp("calib")
    made = _make_tile(root / "coadd" / TILE)
    out = root / "calibrated"
    code = main(["coadd", "calibrate", "--tile", TILE, "--bands", "g,r,i,z", "--coadds", str(root / "coadd" / TILE),
                 "--survey", "des", "--version", "v1", "--out", str(out), "--tiling", str(made["tiling"]),
                 "--refcat", str(made["refcat"])])
    return {**made, "root": root, "out": out, "code": code}


def test_zeropoint_offsets_are_recovered_within_20_mmag(run: dict):
    assert run["code"] == EXIT_OK
    qa = json.loads((run["out"] / "qa.json").read_text())
    assert qa["summary"]["locus_absolute"] is True and qa["summary"]["n_with_j"] > 50
    for band, off in OFFSETS.items():
        assert qa["dzp"][band] == pytest.approx(off, abs=0.020), band
        assert qa["zeropoints"][band] == pytest.approx(30.0 + off, abs=0.020)
    assert qa["summary"]["verdict"] == "pass"
    assert {c["name"] for c in qa["checks"]} >= {"locus_scatter_gr_ri", "locus_scatter_ri_iz",
                                                 "locus_scatter_gr_rJ", "n_locus_stars"}


def test_catalogs_are_calibrated_and_complete(run: dict):
    from cosmodm_ops.astromatic import read_ldac

    qa = json.loads((run["out"] / "qa.json").read_text())
    cats = {b: read_ldac(run["out"] / f"{TILE}_{b}_cat.fits") for b in OFFSETS}
    n = {len(c) for c in cats.values()}
    assert len(n) == 1  # dual-image mode: one row per detection in every band
    assert n.pop() >= 0.95 * (run["n_star"] + run["n_gal"])
    r = cats["r"]
    stars = (np.abs(r["SPREAD_MODEL"]) < 0.003) & (r["MAG_PSF"] < 90)
    galaxies = r["SPREAD_MODEL"] > 0.01
    assert stars.sum() >= 0.9 * run["n_star"] and galaxies.sum() >= 0.8 * run["n_gal"]
    from astropy.io import fits

    with fits.open(run["out"] / f"{TILE}_g_cat.fits") as h:
        assert h["LDAC_OBJECTS"].header["MAGZERO"] == pytest.approx(qa["zeropoints"]["g"])


def test_products_manifest_and_archive(run: dict):
    from cosmodm_ops.archive import Archive
    from cosmodm_ops.fits import file_sha256
    from cosmodm_ops.manifest import read_manifest

    m = read_manifest(run["out"] / "manifest.json")
    kinds = sorted((p.kind, p.tags["band"]) for p in m.products)
    assert kinds == [("coadd", "det"), ("coadd_catalog", "g"), ("coadd_catalog", "i"), ("coadd_catalog", "r"),
                     ("coadd_catalog", "z"), ("qa", None), ("report", None)]
    for p in m.products:
        assert file_sha256(run["out"] / p.path) == p.sha256
    assert {i.role for i in m.inputs} == {"coadd_homog", "coadd_homog_weight", "refcat"}
    assert (run["out"] / f"{TILE}_color.png").stat().st_size > 1000
    archive = Archive(f"sqlite:///{run['root'] / 'a.db'}", run["root"] / "archive")
    archive.init()
    for band in OFFSETS:
        archive.register_manifest(run["root"] / "coadd" / TILE / band / "manifest.json")
    ids = archive.register_manifest(run["out"] / "manifest.json")
    assert len(ids) == 7
    (cat,) = archive.find(tile=TILE, band="r", kind="coadd_catalog")
    up = archive.lineage(cat["id"], direction="up", depth=1)
    assert {up["products"][e["input_id"]]["band"] for e in up["edges"] if e["input_id"]} == set(OFFSETS)
    near = archive.cone(RA0, DEC0, 0.01)
    assert near and all(r["tile"] == TILE for r in near)
    (row,) = archive.qa_results(tile=TILE, check_name="locus_scatter_gr_ri")
    assert row["verdict"] == "pass" and row["band"] is None and row["scope"] == "tile"


def test_two_bands_give_catalogs_without_a_locus_fit(run: dict, tmp_path: Path):
    out = tmp_path / "gr"
    code = main(["coadd", "calibrate", "--tile", TILE, "--bands", "g,r", "--coadds",
                 str(run["root"] / "coadd" / TILE / "g"), str(run["root"] / "coadd" / TILE / "r"),
                 "--survey", "des", "--version", "v1", "--out", str(out), "--tiling", str(run["tiling"])])
    assert code == EXIT_OK
    qa = json.loads((out / "qa.json").read_text())
    assert qa["zeropoints"] == {"g": 30.0, "r": 30.0} and qa["locus"] is None
    (chk,) = [c for c in qa["checks"] if c["name"] == "n_locus_stars"]
    assert chk["verdict"] == "skip" and "needs g, r, i and z" in chk["reason"]
    assert qa["summary"]["detection_bands"] == "r"


def test_missing_band_is_bad_input(run: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    code = main(["coadd", "calibrate", "--tile", TILE, "--bands", "g,Y", "--coadds", str(run["root"] / "coadd" / TILE),
                 "--survey", "des", "--out", str(tmp_path / "x"), "--tiling", str(run["tiling"])])
    assert code == EXIT_BAD_INPUT
    assert "no coadd of band(s) ['Y']" in capsys.readouterr().err
