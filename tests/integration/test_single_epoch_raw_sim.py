"""The raw path end to end on a simulated decam-mini night (`cosmodm sim night`): detrended pixels against the
simulator's noiseless truth, then `cosmodm single-epoch run --exposure` against truth/exposures.fits."""

from __future__ import annotations

import json
import math
from pathlib import Path

import fitsio
import numpy as np
import pytest

from cosmodm_ops.cli import EXIT_OK, main
from cosmodm_ops.config import load_config
from cosmodm_ops.fits import decompress_file
from cosmodm_ops.manifest import read_manifest
from cosmodm_ops.single_epoch import raw as R
from cosmodm_ops.single_epoch.detrend import MASK_BITS
from tests.support import need_binary

pytestmark = pytest.mark.astromatic

NIGHT, SEED, N_EXP, CLOUDY = "2026-11-23", 7, 3, 1


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sim_night")
    argv = ["sim", "night", "--camera", "decam-mini", "--night", NIGHT, "--exposures", str(N_EXP), "--bands", "g,r",
            "--cloudy", str(CLOUDY), "--seed", str(SEED), "--no-progress", "--out", str(out)]
    assert main(argv) == EXIT_OK
    return out


@pytest.fixture(scope="module")
def truth_exposures(night: Path) -> dict[int, np.void]:
    return {int(r["expnum"]): r for r in fitsio.read(str(night / "truth" / "exposures.fits"))}


def _raw(night: Path, expnum: int) -> Path:
    return night / "raw" / f"decam-mini_{expnum:08d}.fits.fz"


def _truth_image(expnum: int, ccdnum: int) -> tuple[np.ndarray, np.ndarray]:
    """Noiseless S (sky + objects, e-, trimmed frame) and the true pixel response F of one CCD, rendered with the
    simulator's own functions (the same plan, sky and renderer as `cosmodm sim night`)."""
    from cosmodm_ops.sim.exposure import _pixel_positions
    from cosmodm_ops.sim.instrument import ccd_signature
    from cosmodm_ops.sim.night import make_sky, plan_night
    from cosmodm_ops.sim.objects import tangent_plane
    from cosmodm_ops.sim.render import render_sources

    cfg = load_config("demo", camera="decam-mini")
    plan = plan_night(cfg, NIGHT, N_EXP, ["g", "r"], seed=SEED, cloudy=CLOUDY)
    spec = next(e for e in plan.exposures if e.expnum == expnum)
    fp = plan.focal_plane
    cam = fp.camera
    cat = make_sky(plan)
    xi, eta = tangent_plane(cat.ra, cat.dec, spec.ra, spec.dec)
    flux = spec.exptime * 10.0 ** (-0.4 * (cat.mags[spec.band].astype(float) - spec.zeropoint))
    ccd = fp.ccd(ccdnum)
    x, y = _pixel_positions(fp, ccd, xi, eta)
    near = np.isfinite(x) & (x > -60) & (x < cam.ccd_nx + 60) & (y > -60) & (y < cam.ccd_ny + 60)
    rho = math.hypot(*fp.offset_deg(ccd)) / fp.radius_deg()
    fwhm_px = spec.fwhm_arcsec / cam.pixel_scale * (1.0 + 0.05 * rho * rho)
    s = render_sources((cam.ccd_ny, cam.ccd_nx), x[near], y[near], flux[near], fwhm_px, spec.beta,
                       r_half_px=cat.r_half[near] / cam.pixel_scale, q=cat.q[near], pa_deg=cat.pa[near])
    s += np.float32(spec.sky_e)
    return s, ccd_signature(fp, ccd, spec.band, SEED).flat_true


def test_detrended_pixels_match_the_simulation_truth_within_noise(night: Path, truth_exposures: dict,
                                                                  tmp_path: Path):
    expnum = min(truth_exposures)
    cfg = load_config("demo", camera="decam-mini")
    raw = _raw(night, expnum)
    hdus, info, primary, calib_inputs = R.raw_exposure_plan(raw, night / "calib", cfg)
    plain = decompress_file(raw, tmp_path / "raw.fits")
    chi2 = {}
    for hdu, extname in hdus:
        ccdnum = next(c for n, c in R.camera_ccds(cfg.camera) if n == extname)
        spec = {"raw": str(plain), "hdu": hdu, "extname": extname, "ccd": ccdnum, "band": info.band,
                "camera": cfg.camera.model_dump(mode="json"), "calib": str(night / "calib"),
                "calib_files": dict(calib_inputs), "primary_header": primary.tostring(sep="\n")}
        res = R.ingest_and_detrend(spec)
        s, f = _truth_image(expnum, ccdnum)
        var = (f * s + res["readnoise"] ** 2) / f**2
        good = res["mask"] == 0
        chi2[extname] = float(np.mean(((res["image"] - s) ** 2 / var)[good]))
        # the weight map is the inverse variance where the truth is sky alone
        sky_only = good & (s < float(truth_exposures[expnum]["sky_e"]) + 1.0)
        chi2_w = float(np.mean(((res["image"] - s) ** 2 * res["weight"])[sky_only]))
        assert abs(chi2_w - 1.0) < 0.05, (extname, chi2_w)
        assert (res["mask"] & MASK_BITS["BADPIX"]).any()  # the simulator's bad columns
    assert all(abs(v - 1.0) < 0.05 for v in chi2.values()), chi2


@pytest.fixture(scope="module")
def runs(night: Path, truth_exposures: dict, tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    need_binary("source-extractor", "psfex", "scamp")
    clear = min(e for e, t in truth_exposures.items() if not t["cloudy"])
    cloudy = min(e for e, t in truth_exposures.items() if t["cloudy"])
    out = tmp_path_factory.mktemp("se_raw")
    res = {}
    for expnum in (clear, cloudy):
        argv = ["single-epoch", "run", "--exposure", str(_raw(night, expnum)), "--calib", str(night / "calib"),
                "--refcat", str(night / "refcat" / "astrometric.fits"), "--out", str(out / str(expnum)),
                "--jobs", "2"]
        assert main(argv) == EXIT_OK, expnum
        res[expnum] = out / str(expnum)
    return res


def test_every_ccd_succeeds_with_products_and_calibration_inputs(runs: dict[int, Path]):
    for path in runs.values():
        m = read_manifest(path / "manifest.json")
        assert [u.state for u in m.units] == ["ok"] * 4
        assert {i.role for i in m.inputs} == {"raw", "bias", "flat", "starflat", "bpm", "refcat"}
        kinds = sorted(p.kind for p in m.products)
        assert kinds.count("image") == 4 and kinds.count("catalog") == 4 and kinds.count("head") == 4


def test_clear_exposure_meets_the_accuracy_targets(runs: dict[int, Path], truth_exposures: dict):
    expnum = min(e for e, t in truth_exposures.items() if not t["cloudy"])
    qa = json.loads((runs[expnum] / "qa.json").read_text())
    exp, truth = qa["exposure"], truth_exposures[expnum]
    assert exp["astrometry"] == "SCAMP" and exp["verdict"] == "pass"
    assert exp["astrom_rms_mas"] <= 30.0
    assert exp["fwhm_arcsec"] == pytest.approx(float(truth["fwhm_arcsec"]), rel=0.03)
    assert abs(exp["zeropoint_1s"] - float(truth["zeropoint"])) <= 0.020
    assert exp["zeropoint_deficit_mag"] < 0.1


def test_cloudy_exposure_fails_its_zeropoint_gate(runs: dict[int, Path], truth_exposures: dict):
    expnum = min(e for e, t in truth_exposures.items() if t["cloudy"])
    qa = json.loads((runs[expnum] / "qa.json").read_text())
    exp, truth = qa["exposure"], truth_exposures[expnum]
    assert exp["zeropoint_deficit_mag"] > 0.3
    assert abs(exp["zeropoint_1s"] - float(truth["zeropoint"])) <= 0.020
    gate = next(c for c in qa["checks"] if c["name"] == "zeropoint_deficit_mag")
    assert gate["verdict"] == "fail" and exp["verdict"] == "fail"
