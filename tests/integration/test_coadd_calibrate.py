"""``cosmodm coadd calibrate`` on synthetic homogenized coadds with known zeropoint offsets.

Four bands of one tile, made as ``cosmodm coadd run`` leaves them (``<dir>/<band>/manifest.json``
with the ``coadd_homog`` products): stars drawn from the Covey et al. stellar locus, observed with
per-band zeropoint errors (the truth), a few galaxies, a Moffat PSF and Gaussian noise; J of
70% of the stars in a photometric reference catalog. The calibration must find the offsets.

Between them, faint stars on the locus span the detection limit, and everything is written as
the simulator's truth catalogue: ``--truth`` must find completeness falling from 1 to 0 at
the limit expected from the noise, the PSF and SExtractor's threshold
(:func:`_expected_limit_r`).
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
RA0, DEC0, SCALE, NPIX = 50.0, -30.0, 0.263, 800
BRIGHT_AREA = 620  # bright objects in x, y < BRIGHT_AREA; faint ones in the L-shaped rest (no blends)
FWHM_PX, BETA, SIGMA = 4.5, 2.5, 3.0
OFFSETS = {"g": 0.12, "r": -0.07, "i": 0.05, "z": 0.10}
FAINT_GI = 1.0  # g-i of the faint stars (on the locus)
DETECT_THRESH, DETECT_MINAREA = 1.5, 5  # the config's single_epoch.detect_thresh / detect_minarea


def _faint_colours() -> dict[str, float]:
    """True magnitude minus r of the faint stars, per band (the locus at g-i = FAINT_GI)."""
    from cosmodm_ops.coadd.locus import read_covey_locus

    c = {k: float(v[0]) for k, v in read_covey_locus().at_gi(np.array([FAINT_GI])).items()}
    return {"g": c["g-r"], "r": 0.0, "i": -c["r-i"], "z": -c["r-i"] - c["i-z"]}


def _expected_limit_r() -> float:
    """r magnitude where a faint star is detected half the time, from SIGMA, the PSF and the threshold.

    Detection runs on the mean S/N image of r and i (``coadd.detection_image: snr_mean``): per
    pixel ``(f_r + f_i) / SIGMA / sqrt(2)``, a unit Gaussian on the sky (whose mode, SExtractor's
    background, is 0). A source adds its expected per-pixel S/N ``(nu_r + nu_i) / sqrt(2)``;
    SExtractor convolves with the normalized 5x5 Gaussian filter and needs DETECT_MINAREA pixels
    at DETECT_THRESH times the sky RMS (1). Half the time detected = the expected filtered image
    has just DETECT_MINAREA pixels above the threshold; found by bisection and averaged over
    sub-pixel positions. (Until the detection image became ``snr_mean`` this modelled the r+i
    CHI-MEAN image with the Rice mean; the limit it gives for these stars is 0.1 mag deeper now: 24.58 against 24.48.)
    """
    from scipy.signal import fftconvolve

    from cosmodm_ops.astromatic import config_path
    from cosmodm_ops.coadd.synthetic import moffat_image

    kern = np.loadtxt(config_path("gauss_3.0_5x5.conv"), skiprows=2, max_rows=5)
    kern /= kern.sum()
    col = _faint_colours()

    def n_above(r_mag: float, dx: float, dy: float) -> int:
        psf = moffat_image((41, 41), 20 + dx, 20 + dy, FWHM_PX, BETA)
        snr = sum(10 ** (-0.4 * (r_mag + col[b] - OFFSETS[b] - 30.0)) * psf / SIGMA for b in ("r", "i")) / np.sqrt(2)
        return int((fftconvolve(snr, kern, mode="same") >= DETECT_THRESH).sum())

    limits = []
    for dx, dy in ((0.0, 0.0), (0.5, 0.0), (0.5, 0.5), (0.25, 0.25)):
        lo, hi = 20.0, 28.0
        for _ in range(30):
            mid = 0.5 * (lo + hi)
            lo, hi = (mid, hi) if n_above(mid, dx, dy) >= DETECT_MINAREA else (lo, mid)
        limits.append(0.5 * (lo + hi))
    return float(np.mean(limits))


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
    grid = np.arange(40, BRIGHT_AREA - 20, 44)
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
    # faint stars 40 pixels apart around the bright area (own random stream), r uniform across the
    # expected detection limit; nearer to the bright stars, many would merge into their isophotes
    frng = np.random.default_rng(11)
    fx, fy = (a.ravel() for a in np.meshgrid(np.arange(30, NPIX - 20, 40), np.arange(30, NPIX - 20, 40)))
    keep = (fx > BRIGHT_AREA) | (fy > BRIGHT_AREA)
    fx, fy = fx[keep], fy[keep]
    fxs = fx + frng.uniform(-4, 4, fx.size)
    fys = fy + frng.uniform(-4, 4, fx.size)
    limit = _expected_limit_r()
    fr = frng.uniform(limit - 2.0, limit + 1.5, fx.size)
    col = _faint_colours()
    true_mags = {}
    for band, off in OFFSETS.items():
        m = np.full(len(xs), np.nan)
        m[~is_gal] = mags[band]
        m[is_gal] = rng.uniform(17.5, 19.5, n_gal)
        fm = fr + col[band] - off
        true_mags[band] = np.concatenate([m, fm]) + off  # rendered at true - offset
        flux = 10 ** (-0.4 * (m - 30.0))
        fwhm = np.where(is_gal, 3.0 * FWHM_PX, FWHM_PX)
        img = _render((NPIX, NPIX), xs, ys, flux, fwhm) + rng.normal(0, SIGMA, (NPIX, NPIX))
        img += _render((NPIX, NPIX), fxs, fys, 10 ** (-0.4 * (fm - 30.0)), np.full(fx.size, FWHM_PX))
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
    fra, fdec = w.all_pix2world(fxs, fys, 0)
    truth_path = _write_truth(root / "truth" / "objects.fits", np.concatenate([ra, fra]),
                              np.concatenate([dec, fdec]), true_mags, np.concatenate([~is_gal, np.ones(fx.size, bool)]))
    j = mags["J"]
    has = np.isfinite(j)
    cols = [fits.Column("ra", "D", array=ra[~is_gal][has]), fits.Column("dec", "D", array=dec[~is_gal][has]),
            fits.Column("mag_J", "E", array=j[has])]
    refcat = root / "photometric.fits"
    fits.BinTableHDU.from_columns(cols).writeto(refcat)
    tiling = root / "tiling.yaml"
    tiling.write_text(f"tiling:\n  name: syn\n  kind: targets\n  pixel_scale: {SCALE}\n  targets:\n"
                      f"    - {{name: {TILE}, ra: {RA0}, dec: {DEC0}, size_deg: {NPIX * SCALE / 3600.0!r}}}\n")
    is_star = np.concatenate([~is_gal, np.ones(fx.size, bool)])
    table = {"ra": np.concatenate([ra, fra]), "dec": np.concatenate([dec, fdec]), "is_star": is_star,
             **{f"mag_{b}": v for b, v in true_mags.items()}}
    return {"truth": truth, "refcat": refcat, "tiling": tiling, "n_star": n_star, "n_gal": n_gal,
            "truth_catalog": truth_path, "limit_r": limit, "n_faint": fx.size, "truth_table": table}


def _write_truth(path: Path, ra: np.ndarray, dec: np.ndarray, mags: dict[str, np.ndarray], is_star: np.ndarray
                 ) -> Path:
    """The simulator's truth table (``cosmodm sim night`` writes truth/objects.fits with the same writer)."""
    from cosmodm_ops.sim.objects import Catalog
    from cosmodm_ops.sim.writer import write_truth_objects

    n = len(ra)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_truth_objects(path, Catalog(ra, dec, mags, is_star, np.zeros(n), np.ones(n), np.zeros(n)))


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    need_binary("source-extractor", "psfex")
    root = tmp_path_factory.mktemp("calib")
    made = _make_tile(root / "coadd" / TILE)
    out = root / "calibrated"
    code = main(["coadd", "calibrate", "--tile", TILE, "--bands", "g,r,i,z", "--coadds", str(root / "coadd" / TILE),
                 "--survey", "des", "--version", "v1", "--out", str(out), "--tiling", str(made["tiling"]),
                 "--refcat", str(made["refcat"]), "--truth", str(made["truth_catalog"])])
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


def test_detections_are_measured_in_every_band(run: dict):
    """The mean S/N detection image lets no negative noise peak through: >= 98% of the detections
    above the 5-sigma detection limit have a MAG_AUTO in all four bands (the CHI-MEAN image left
    about 60% of all detections unmeasured), and the truth objects brighter than the limit that
    are detected are measured in every band."""
    from cosmodm_ops.astromatic import read_ldac
    from cosmodm_ops.qa.completeness import match_one_to_one

    qa = json.loads((run["out"] / "qa.json").read_text())
    m = qa["measured"]
    assert m["n_above_limit"] >= run["n_star"] + run["n_gal"]
    assert m["fraction_measured_above_limit"] >= 0.98
    assert qa["summary"]["fraction_measured_above_limit"] == m["fraction_measured_above_limit"]
    cats = {b: read_ldac(run["out"] / f"{TILE}_{b}_cat.fits") for b in OFFSETS}
    measured = np.all([cats[b]["MAG_AUTO"] < 90 for b in OFFSETS], axis=0)
    assert m["n_measured_all_bands"] == int(measured.sum())
    t = run["truth_table"]
    above = t["mag_r"] < run["limit_r"] - 0.5
    _, i_det, _ = match_one_to_one(t["ra"][above], t["dec"][above], cats["r"]["ALPHAWIN_J2000"],
                                    cats["r"]["DELTAWIN_J2000"], 1.0)
    assert len(i_det) >= 0.98 * above.sum()
    assert measured[i_det].mean() >= 0.98


def test_detmodel_colours_of_bright_galaxies_match_the_truth(run: dict):
    """MAG_DETMODEL (one model from the detection image, scaled per band): the calibrated g-r, r-i
    and i-z of the bright galaxies (17.5-19.5, 3x the PSF's FWHM) within 0.03 mag of the truth."""
    from cosmodm_ops.astromatic import read_ldac
    from cosmodm_ops.qa.completeness import match_one_to_one

    cats = {b: read_ldac(run["out"] / f"{TILE}_{b}_cat.fits") for b in OFFSETS}
    t = run["truth_table"]
    gal = ~t["is_star"]
    i_true, i_det, _ = match_one_to_one(t["ra"][gal], t["dec"][gal], cats["r"]["ALPHAWIN_J2000"],
                                    cats["r"]["DELTAWIN_J2000"], 1.0)
    assert len(i_det) >= 0.9 * gal.sum()
    for b1, b2 in (("g", "r"), ("r", "i"), ("i", "z")):
        m1, m2 = cats[b1]["MAG_DETMODEL"][i_det], cats[b2]["MAG_DETMODEL"][i_det]
        assert np.all((m1 < 90) & (m2 < 90)), (b1, b2)
        true = t[f"mag_{b1}"][gal][i_true] - t[f"mag_{b2}"][gal][i_true]
        d = (m1 - m2) - true
        assert abs(np.median(d)) < 0.03 and np.percentile(np.abs(d), 90) < 0.06, (b1, b2, d)


def test_products_manifest_and_archive(run: dict):
    from cosmodm_ops.archive import Archive
    from cosmodm_ops.fits import file_sha256
    from cosmodm_ops.manifest import read_manifest

    m = read_manifest(run["out"] / "manifest.json")
    kinds = sorted((p.kind, p.tags["band"]) for p in m.products)
    assert kinds == [("coadd", "det"), ("coadd_catalog", "g"), ("coadd_catalog", "i"), ("coadd_catalog", "r"),
                     ("coadd_catalog", "z"), ("pseudocolour", "gri"), ("qa", None), ("report", None)]
    for p in m.products:
        assert file_sha256(run["out"] / p.path) == p.sha256
    assert {i.role for i in m.inputs} == {"coadd_homog", "coadd_homog_weight", "refcat", "truth"}
    assert (run["out"] / f"{TILE}_color.png").stat().st_size > 1000
    archive = Archive(f"sqlite:///{run['root'] / 'a.db'}", run["root"] / "archive")
    archive.init()
    for band in OFFSETS:
        archive.register_manifest(run["root"] / "coadd" / TILE / band / "manifest.json")
    ids = archive.register_manifest(run["out"] / "manifest.json")
    assert len(ids) == 8  # 4 catalogs, detection image, pseudo-colour image, qa, report
    (pc,) = archive.find(tile=TILE, kind="pseudocolour")
    assert (pc["survey"], pc["version"], pc["band"]) == ("des", "v1", "gri")
    (cat,) = archive.find(tile=TILE, band="r", kind="coadd_catalog")
    up = archive.lineage(cat["id"], direction="up", depth=1)
    assert {up["products"][e["input_id"]]["band"] for e in up["edges"] if e["input_id"]} == set(OFFSETS)
    near = archive.cone(RA0, DEC0, 0.01)
    assert near and all(r["tile"] == TILE for r in near)
    (row,) = archive.qa_results(tile=TILE, check_name="locus_scatter_gr_ri")
    assert row["verdict"] == "pass" and row["band"] is None and row["scope"] == "tile"


def test_completeness_against_truth_falls_at_the_expected_limit(run: dict):
    """Completeness ~1 well above the limit, ~0 below it; 50% within 0.3 mag of the limit from the noise."""
    qa = json.loads((run["out"] / "qa.json").read_text())
    limit = run["limit_r"]
    assert 24.0 < limit < 25.0  # r, for SIGMA 3, FWHM 4.5 px, 1.5 sigma and 5 pixels on the r+i mean S/N image
    comp = qa["completeness"]
    assert set(comp) == set(OFFSETS)
    r = comp["r"]
    lo, hi = np.array(r["mag_lo"]), np.array(r["mag_hi"])
    c = np.array([np.nan if v is None else v for v in r["completeness"]])
    n_true = np.array(r["n_true"])
    assert n_true.sum() == run["n_star"] + run["n_gal"] + run["n_faint"]  # the whole truth is in the footprint
    bright, faint = hi <= limit - 0.75, lo >= limit + 0.5
    assert np.nansum(c[bright] * n_true[bright]) >= 0.98 * n_true[bright].sum()
    assert np.nansum(c[faint] * n_true[faint]) <= 0.1 * n_true[faint].sum()
    assert r["mag50"] == pytest.approx(limit, abs=0.3)
    assert r["mag90"] < r["mag50"]
    # purity by measured magnitude: the bright detections are all real
    p = np.array([np.nan if v is None else v for v in r["purity"]])
    assert np.nanmin(p[hi <= limit - 0.75]) >= 0.95
    assert r["mag_offset"] == 0.0  # absolute (J-anchored) zeropoints: no alignment to the truth
    assert r["median_sep_arcsec"] < 0.2
    # SPREAD_MODEL: bright stars called stars
    sc = np.array([np.nan if v is None else v for v in r["classification"]["star_completeness"]])
    assert np.nanmin(sc[hi <= 21.0]) >= 0.9
    names = {ch["name"]: ch for ch in qa["checks"]}
    assert names["completeness_mag50_r"]["value"] == pytest.approx(r["mag50"])
    assert qa["summary"]["completeness_mag50_r"] == pytest.approx(r["mag50"])
    assert (run["out"] / f"{TILE}_completeness.png").stat().st_size > 5000
    assert "Completeness and purity against truth" in (run["out"] / f"{TILE}_report.html").read_text()


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
