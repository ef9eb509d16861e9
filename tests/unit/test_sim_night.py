"""The simulator's statistics against its inputs, on a small decam-mini night.

Sky level and read noise, star counts and photometry against truth, WCS round trip and star
positions against the header WCS plus the pointing error, crosstalk ghosts against the
coefficients, cloudy zeropoints, determinism and the output layout.
"""

from __future__ import annotations

import math
from pathlib import Path

import fitsio
import numpy as np
import pytest
from scipy import ndimage

from cosmodm_ops.cameras.layout import ccd_wcs, focal_plane
from cosmodm_ops.config import load_config
from cosmodm_ops.fits import file_sha256
from cosmodm_ops.sim import exposure as X
from cosmodm_ops.sim.night import expnum_start, plan_night, raw_name, run_night, signature_source
from cosmodm_ops.sim.objects import Catalog, tangent_plane
from cosmodm_ops.sim.render import moffat_alpha

SEED = 7


@pytest.fixture(scope="module")
def cfg():
    return load_config("demo", camera="decam-mini")


@pytest.fixture(scope="module")
def night(cfg, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("night")
    plan = plan_night(cfg, "2026-11-23", 3, ["g", "r"], seed=SEED, cloudy=1)
    run_night(plan, out, progress=False)
    return {"plan": plan, "out": out, "fp": focal_plane(cfg.camera),
            "truth": fitsio.read(out / "truth" / "objects.fits"),
            "exps": fitsio.read(out / "truth" / "exposures.fits")}


def _raw(night: dict, expnum: int, ccd: str) -> tuple[np.ndarray, dict]:
    path = night["out"] / "raw" / raw_name("decam-mini", expnum)
    with fitsio.FITS(str(path)) as f:
        return f[ccd].read().astype(np.float64), f[ccd].read_header()


def _electrons(night: dict, raw: np.ndarray, ccd_name: str, band: str) -> np.ndarray:
    """Trimmed frame in electrons, overscan (row median) and bias removed, divided by the true response F."""
    fp = night["fp"]
    ccd = fp.ccd(ccd_name)
    sec = fp.sections(ccd)
    halves = []
    for i in range(2):
        ovs = np.median(raw[sec.rows, sec.overscan[i]], axis=1)
        halves.append((raw[sec.rows, sec.data[i]] - ovs[:, None]) * ccd.amp_at(i, sec).gain)
    e = np.hstack(halves)
    calib = night["out"] / "calib"
    bias = fitsio.read(calib / "bias.fits", ext=ccd_name)
    flat = fitsio.read(calib / f"flat_{band}.fits", ext=ccd_name)
    star = fitsio.read(calib / f"starflat_{band}.fits", ext=ccd_name)
    return (e - bias) / (flat / star)


def _exposure(night: dict, k: int):
    e = night["exps"][k]
    return int(e["expnum"]), str(e["band"]).strip(), e


def test_layout_and_headers(night: dict) -> None:
    out: Path = night["out"]
    exps = night["exps"]
    assert sorted(p.name for p in (out / "calib").iterdir()) == [
        "bias.fits", "bpm.fits", "flat_g.fits", "flat_r.fits", "starflat_g.fits", "starflat_r.fits"]
    assert (out / "refcat" / "astrometric.fits").exists() and (out / "refcat" / "photometric.fits").exists()
    assert list(exps["band"]) == ["g", "r", "g"]
    assert list(exps["expnum"]) == list(range(exps["expnum"][0], exps["expnum"][0] + 3))
    expnum = int(exps["expnum"][0])
    path = out / "raw" / raw_name("decam-mini", expnum)
    with fitsio.FITS(str(path)) as f:
        assert len(f) == 5
        h0 = f[0].read_header()
        assert h0["CAMERA"] == "decam-mini" and h0["INSTRUME"] == "DECam" and h0["EXPNUM"] == expnum
        assert h0["BAND"] == "g" and h0["FILTER"].startswith("g DECam") and h0["NITE"] == "20261123"
        assert h0["SIMULATE"] is True and h0["SIMSEED"] == SEED and h0["OBSTYPE"] == "object"
        assert h0["RA"] == pytest.approx(exps["ra_header"][0]) and h0["TELRA"].count(":") == 2
        for hdu, name in zip(f[1:], ["S1", "S2", "N1", "N2"]):
            h = hdu.read_header()
            assert h["EXTNAME"] == name and hdu.is_compressed()
            assert h["ZCMPTYPE"] == "RICE_1" and h["ZBITPIX"] == 16 and h["BZERO"] == 32768
            assert hdu.read().dtype == np.uint16 and hdu.read().shape == (1074, 624)
            assert h["CCDNUM"] == night["fp"].ccd(name).ccdnum
            for key in ("GAINA", "GAINB", "RDNOISEA", "RDNOISEB", "SATURATA", "SATURATB", "DATASECA", "BIASSECB"):
                assert key in h
    # the S CCDs are flipped: amplifier A on the right, data rows after the postscan rows
    _, h = _raw(night, expnum, "S1")
    assert h["DATASECA"] == "[313:568,51:1074]" and h["BIASSECA"] == "[569:618,51:1074]"
    _, h = _raw(night, expnum, "N1")
    assert h["DATASECA"] == "[57:312,1:1024]" and h["BIASSECB"] == "[569:618,1:1024]"


def test_read_noise_in_the_overscan(night: dict) -> None:
    fp = night["fp"]
    expnum, _, _ = _exposure(night, 0)
    for ccd in fp.ccds:
        raw, _ = _raw(night, expnum, ccd.name)
        sec = fp.sections(ccd)
        for i in range(2):
            amp = ccd.amp_at(i, sec)
            ovs = raw[:, sec.overscan[i]]
            resid = ovs - ovs.mean(axis=1, keepdims=True)
            measured = resid.std() * math.sqrt(ovs.shape[1] / (ovs.shape[1] - 1))
            expected = math.sqrt((amp.readnoise / amp.gain) ** 2 + 1.0 / 12.0)  # + digitisation
            assert measured == pytest.approx(expected, rel=0.03), (ccd.name, amp.name)
            level = np.median(ovs)
            assert 1300 < level < 1700


def test_sky_level_against_truth(night: dict) -> None:
    for k in range(3):
        expnum, band, e = _exposure(night, k)
        for ccd in night["fp"].ccds:
            raw, _ = _raw(night, expnum, ccd.name)
            img = _electrons(night, raw, ccd.name, band)
            # the mode of a crowded field: a clipped median of the pixels below the median + 3 sigma
            med = np.median(img)
            sig = 1.4826 * np.median(np.abs(img - med))
            sky = np.median(img[img < med + 2 * sig])
            assert sky == pytest.approx(e["sky_e"], rel=0.03), (expnum, ccd.name)
            # sky + read noise, plus a little confusion noise from the faint objects of the crowded field
            assert sig == pytest.approx(math.sqrt(e["sky_e"] + 6.2 ** 2), rel=0.15)


def _true_pixels(night: dict, ccd_name: str, e) -> tuple[np.ndarray, np.ndarray]:
    fp = night["fp"]
    t = night["truth"]
    ccd = fp.ccd(ccd_name)
    xi, eta = tangent_plane(t["ra"], t["dec"], e["ra"], e["dec"])
    return X._pixel_positions(fp, ccd, xi, eta)


def test_wcs_round_trip_against_truth(night: dict) -> None:
    """Truth positions -> pixels (the simulator's projection) -> sky (astropy TAN WCS) round trip."""
    fp = night["fp"]
    _, _, e = _exposure(night, 1)
    t = night["truth"]
    for ccd in fp.ccds:
        x, y = _true_pixels(night, ccd.name, e)
        on = (x >= 0) & (x < 512) & (y >= 0) & (y < 1024)
        assert on.sum() > 100
        w = ccd_wcs(fp, ccd, e["ra"], e["dec"])
        ax, ay = w.all_world2pix(t["ra"][on], t["dec"][on], 0)
        assert np.max(np.hypot(ax - x[on], ay - y[on])) < 1e-6
        ra, dec = w.all_pix2world(x[on], y[on], 0)
        dra = ((ra - t["ra"][on] + 180) % 360 - 180) * np.cos(np.radians(dec))
        assert np.max(np.hypot(dra, dec - t["dec"][on])) * 3.6e6 < 0.01  # mas


def _isolated_bright_stars(night, ccd_name, e, band, n_max=25):
    """Truth stars well inside the CCD, unsaturated, with no object brighter than mag+4 within 10 px."""
    t = night["truth"]
    x, y = _true_pixels(night, ccd_name, e)
    mag = t[f"mag_{band}"]
    near = (x > -20) & (x < 532) & (y > -20) & (y < 1044)
    xs, ys, ms = x[near], y[near], mag[near]
    alpha = moffat_alpha(e["fwhm_arcsec"] / 0.263, 3.0)
    flux = e["exptime"] * 10 ** (-0.4 * (mag - e["zeropoint"]))
    peak = flux * 2 / (math.pi * alpha ** 2)
    cand = np.nonzero(t["is_star"] & (x > 20) & (x < 492) & (y > 20) & (y < 1004) & (peak < 60_000)
                      & (peak > 3000))[0]
    keep = []
    for j in cand[np.argsort(mag[cand])]:
        d = np.hypot(xs - x[j], ys - y[j])
        if np.sum((d < 10) & (ms < mag[j] + 4)) == 1:
            keep.append(j)
        if len(keep) == n_max:
            break
    return np.array(keep), x, y, flux


def _centroid(img: np.ndarray, x0: float, y0: float, r: int = 5) -> tuple[float, float]:
    ix, iy = round(x0), round(y0)
    box = img[iy - 12:iy + 13, ix - 12:ix + 13]
    bg = np.median(np.concatenate([box[0], box[-1], box[:, 0], box[:, -1]]))
    cx, cy = float(ix), float(iy)
    for _ in range(3):
        jx, jy = round(cx), round(cy)
        sub = img[jy - r:jy + r + 1, jx - r:jx + r + 1] - bg
        yy, xx = np.mgrid[jy - r:jy + r + 1, jx - r:jx + r + 1]
        w = np.exp(-0.5 * ((xx - cx) ** 2 + (yy - cy) ** 2) / 2.0 ** 2) * sub
        cx, cy = float((w * xx).sum() / w.sum()), float((w * yy).sum() / w.sum())
    return cx, cy


def test_bright_star_positions_vs_header_wcs_and_pointing_error(night: dict) -> None:
    from astropy.wcs import WCS

    fp = night["fp"]
    expnum, band, e = _exposure(night, 0)
    offsets_true, offsets_hdr = [], []
    for ccd in fp.ccds:
        raw, hdr = _raw(night, expnum, ccd.name)
        img = _electrons(night, raw, ccd.name, band)
        stars, _, _, _ = _isolated_bright_stars(night, ccd.name, e, band)
        assert len(stars) >= 10
        t = night["truth"]
        whdr = WCS({k: hdr[k] for k in ("CTYPE1", "CTYPE2", "CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2",
                                        "CD1_1", "CD1_2", "CD2_1", "CD2_2")})
        wtrue = ccd_wcs(fp, ccd, e["ra"], e["dec"])  # header WCS with the pointing error taken out
        assert hdr["CRVAL1"] == pytest.approx(e["ra_header"]) and hdr["CRPIX1"] == pytest.approx(wtrue.wcs.crpix[0])
        px_hdr = np.array(whdr.all_world2pix(t["ra"][stars], t["dec"][stars], 0)).T
        px_true = np.array(wtrue.all_world2pix(t["ra"][stars], t["dec"][stars], 0)).T
        meas = np.array([_centroid(img, *p) for p in px_true])
        offsets_true.append(meas - px_true)
        offsets_hdr.append(meas - px_hdr)
    d_true = np.concatenate(offsets_true)
    d_hdr = np.concatenate(offsets_hdr)
    assert np.all(np.abs(np.median(d_true, axis=0)) < 0.03)
    assert np.median(np.hypot(*d_true.T)) < 0.1
    # the header's tangent point is off by the pointing error, so its predictions are shifted the other
    # way: the measured positions lie at +error (RA east = +x for this camera's parity)
    expected = np.array([e["pointing_error_ra_arcsec"], e["pointing_error_dec_arcsec"]]) / 0.263
    assert np.median(d_hdr, axis=0) == pytest.approx(expected, abs=0.05)
    assert 0.5 <= math.hypot(e["pointing_error_ra_arcsec"], e["pointing_error_dec_arcsec"]) <= 2.0


def test_star_counts_and_photometry_against_truth(night: dict) -> None:
    """Every bright truth star in a CCD is found as a peak there, with the truth flux."""
    fp = night["fp"]
    t = night["truth"]
    ratios = {}
    for k in range(3):
        expnum, band, e = _exposure(night, k)
        alpha = moffat_alpha(e["fwhm_arcsec"] / 0.263, 3.0)
        r_ap = 12.0
        enclosed = 1 - (1 + r_ap ** 2 / alpha ** 2) ** -2.0
        found, expected, rk = 0, 0, []
        for ccd in fp.ccds:
            raw, _ = _raw(night, expnum, ccd.name)
            img = _electrons(night, raw, ccd.name, band) - e["sky_e"]
            x, y = _true_pixels(night, ccd.name, e)
            noise = math.sqrt(e["sky_e"])
            peaks = (img == ndimage.maximum_filter(img, size=5)) & (ndimage.uniform_filter(img, 3) > 30 * noise)
            py, px = np.nonzero(peaks)
            flux = e["exptime"] * 10 ** (-0.4 * (t[f"mag_{band}"] - e["zeropoint"]))
            bright = t["is_star"] & (flux * 2 / (math.pi * alpha ** 2) > 80 * noise) & (x > 3) & (x < 508) \
                & (y > 3) & (y < 1020)
            for j in np.nonzero(bright)[0]:
                expected += 1
                found += np.min(np.hypot(px - x[j], py - y[j]), initial=99) < 1.5
            stars, _, _, fl = _isolated_bright_stars(night, ccd.name, e, band)
            yy, xx = np.mgrid[0:1024, 0:512]
            for j in stars:
                ap = np.hypot(xx - x[j], yy - y[j]) < r_ap
                rk.append(img[ap].sum() / (fl[j] * enclosed))
        assert expected > 150
        assert found / expected > 0.97, (expnum, found, expected)
        ratios[k] = float(np.median(rk))
        assert ratios[k] == pytest.approx(1.0, abs=0.02)
        # the zeropoint measured from the stars (mag for 1 e-/s) against the truth table
        measured_zp = e["zeropoint"] + 2.5 * math.log10(ratios[k])
        assert measured_zp == pytest.approx(e["zeropoint"], abs=0.02)
        if e["cloudy"]:
            assert measured_zp <= e["zeropoint_nominal"] - 0.6


def test_cloudy_exposure_zeropoint(night: dict) -> None:
    exps = night["exps"]
    assert exps["cloudy"].sum() == 1
    c = exps[exps["cloudy"]][0]
    assert c["zeropoint_nominal"] - c["zeropoint"] >= 0.6 and c["extinction_mag"] >= 0.6
    for e in exps[~exps["cloudy"]]:
        assert 0 <= e["zeropoint_nominal"] - e["zeropoint"] <= 0.03
        assert 0.9 <= e["fwhm_arcsec"] <= 1.3


def test_psfex_has_enough_stars_per_ccd(night: dict) -> None:
    """>= 100 stars with (PSF-optimal) S/N > 20 per CCD in a clear exposure (what PSFEx and SCAMP need)."""
    t = night["truth"]
    for k in (0, 1, 2):
        _, band, e = _exposure(night, k)
        if e["cloudy"]:
            continue
        alpha = moffat_alpha(e["fwhm_arcsec"] / 0.263, 3.0)
        yy, xx = np.mgrid[-25:26, -25:26]
        p = 2 / (math.pi * alpha ** 2) * (1 + (xx ** 2 + yy ** 2) / alpha ** 2) ** -3.0
        for ccd in night["fp"].ccds:
            x, y = _true_pixels(night, ccd.name, e)
            on = t["is_star"] & (x > 10) & (x < 502) & (y > 10) & (y < 1014)
            flux = e["exptime"] * 10 ** (-0.4 * (t[f"mag_{band}"][on] - e["zeropoint"]))
            snr = np.sqrt(((flux[:, None] * p.ravel()[None, :]) ** 2
                           / (flux[:, None] * p.ravel()[None, :] + e["sky_e"] + 40)).sum(axis=1))
            assert (snr > 20).sum() >= 100, (ccd.name, band)


def test_calibration_frames(night: dict) -> None:
    calib = night["out"] / "calib"
    fp = night["fp"]
    flats = np.concatenate([fitsio.read(calib / "flat_g.fits", ext=c.name).ravel() for c in fp.ccds])
    assert np.median(flats) == pytest.approx(1.0, abs=0.01)
    expnum, _, _ = _exposure(night, 0)
    for ccd in fp.ccds:
        star = fitsio.read(calib / "starflat_r.fits", ext=ccd.name)
        assert star.dtype == np.float32 and star.shape == (1024, 512)
        assert 0.95 < star.min() and star.max() < 1.05
        bpm = fitsio.read(calib / "bpm.fits", ext=ccd.name)
        assert bpm.dtype == np.int32 and 0 < (bpm != 0).sum() < 3 * 1024
        bias = fitsio.read(calib / "bias.fits", ext=ccd.name)
        assert abs(np.median(bias)) < 3
        # a bad column shows up in the raw data: hotter than its neighbours
        raw, _ = _raw(night, expnum, ccd.name)
        sec = fp.sections(ccd)
        trimmed = raw[sec.rows, sec.data[0].start:sec.data[1].stop]
        ys, xs = np.nonzero(bpm)
        col = int(xs[0])
        rows = ys[xs == col]
        left = max(col - 3, 0)
        assert np.median(trimmed[rows, col]) > np.median(trimmed[rows, left]) + 50


def _one_star_exposure(cfg, ccd_name: str, amp_index: int, mag: float = 11.0):
    """A sky with one very bright star on one amplifier of one CCD, rendered at seed 3."""
    fp = focal_plane(cfg.camera)
    plan = plan_night(cfg, "2026-11-23", 1, ["r"], seed=3)
    spec = plan.exposures[0]
    ccd = fp.ccd(ccd_name)
    x0 = 100.0 + amp_index * 256 + 0.3
    y0 = 500.4
    w = ccd_wcs(fp, ccd, spec.ra, spec.dec)
    ra, dec = w.all_pix2world([x0], [y0], 0)
    one = Catalog(np.asarray(ra), np.asarray(dec), {"r": np.array([mag], np.float32)}, np.array([True]),
                  np.zeros(1, np.float32), np.ones(1, np.float32), np.zeros(1, np.float32))
    hdus = X.simulate_exposure(fp, spec, one, signature_source(plan), 3, threads=1)
    return fp, {name: data.astype(np.float64) for name, data, _ in hdus}, (x0, y0)


def _above_overscan(fp, name: str, raw: np.ndarray, i: int) -> np.ndarray:
    sec = fp.sections(name)
    ovs = np.median(raw[sec.rows, sec.overscan[i]], axis=1)
    return raw[sec.rows, sec.data[i]] - ovs[:, None]


def _coeff(fp, victim_ccd: int, victim_amp: str, source_ccd: int, source_amp: str) -> float:
    return next(t.coeff for t in fp.crosstalk if (t.victim_ccd, t.victim_amp, t.source_ccd, t.source_amp)
                == (victim_ccd, victim_amp, source_ccd, source_amp))


def test_crosstalk_ghost_within_a_ccd_is_mirrored(cfg) -> None:
    # N1 (not flipped): amplifier A is the left half; the star sits on A
    fp, raws, _ = _one_star_exposure(cfg, "N1", 0)
    src = _above_overscan(fp, "N1", raws["N1"], 0)
    vic = _above_overscan(fp, "N1", raws["N1"], 1)
    mirrored = vic[:, ::-1]  # victim column j <- source column half-1-j
    bright = src > 2000
    assert bright.sum() > 200  # saturated core and bleed trail
    v = mirrored[bright] - np.median(vic)
    c = float((v * src[bright]).sum() / (src[bright] ** 2).sum())
    assert c == pytest.approx(_coeff(fp, 32, "B", 32, "A"), rel=0.05)
    # and nothing at the unmirrored position
    same = vic[bright] - np.median(vic)
    assert abs(float((same * src[bright]).sum() / (src[bright] ** 2).sum())) < 1e-4


def test_crosstalk_across_ccds_same_orientation(cfg) -> None:
    # S1 (flipped): amplifier A is the right half; decam-mini couples 26A <- 25A with 2e-4
    fp, raws, _ = _one_star_exposure(cfg, "S1", 1)
    src = _above_overscan(fp, "S1", raws["S1"], 1)
    vic = _above_overscan(fp, "S2", raws["S2"], 1)  # S2's amplifier A, same orientation (both A)
    bright = src > 2000
    v = vic[bright] - np.median(vic)
    c = float((v * src[bright]).sum() / (src[bright] ** 2).sum())
    assert c == pytest.approx(_coeff(fp, 26, "A", 25, "A"), rel=0.1)
    # the same star's ghost inside S1 (B <- A, mirrored)
    vb = _above_overscan(fp, "S1", raws["S1"], 0)[:, ::-1]
    c_in = float(((vb[bright] - np.median(vb)) * src[bright]).sum() / (src[bright] ** 2).sum())
    assert c_in == pytest.approx(_coeff(fp, 25, "B", 25, "A"), rel=0.05)


def test_saturation_and_bleed(cfg) -> None:
    fp, raws, (x0, _) = _one_star_exposure(cfg, "N1", 0, mag=10.0)
    ccd = fp.ccd("N1")
    src = _above_overscan(fp, "N1", raws["N1"], 0)
    sat = ccd.amps["A"].saturation
    col = src[:, round(x0)]
    flat_top = np.abs(col - sat) < 10
    assert flat_top.sum() > 40  # the column bleeds well beyond the seeing disc (~10 px)
    assert src.max() <= sat + 10


def test_determinism_same_seed_same_bytes(cfg, tmp_path) -> None:
    shas = []
    for run in ("a", "b"):
        plan = plan_night(cfg, "2026-11-24", 1, ["i"], seed=11, cloudy=1)
        run_night(plan, tmp_path / run, progress=False)
        shas.append({p.relative_to(tmp_path / run): file_sha256(p) for p in sorted((tmp_path / run).rglob("*"))
                     if p.is_file()})
    assert shas[0] == shas[1] and len(shas[0]) == 9
    other = plan_night(cfg, "2026-11-24", 1, ["i"], seed=12)
    run_night(other, tmp_path / "c", progress=False)
    raw = next((tmp_path / "c" / "raw").iterdir())
    assert file_sha256(raw) not in shas[0].values()


def test_expnums_never_collide_between_nights() -> None:
    a = expnum_start("2026-11-23", 5, 200)
    b = expnum_start("2026-11-24", 5, 200)
    c = expnum_start("2026-11-23", 6, 200)
    assert a + 200 <= b and a != c and 900_000 <= a < 100_000_000
    assert all(expnum_start("2026-11-23", s, 1000) == expnum_start("2026-11-23", 0, 1000) for s in range(5))
    with pytest.raises(ValueError, match="1..1000"):
        expnum_start("2026-11-23", 0, 1001)


def test_cli_night_and_bad_input(tmp_path, capsys) -> None:
    from cosmodm_ops.cli import EXIT_BAD_INPUT, main

    out = tmp_path / "n"
    code = main(["sim", "night", "--camera", "decam-mini", "--night", "2026-11-25", "--exposures", "2",
                 "--bands", "z", "--seed", "4", "--cloudy", "1", "--density-scale", "0.3", "--no-progress",
                 "--out", str(out)])
    assert code == 0
    exps = fitsio.read(out / "truth" / "exposures.fits")
    assert list(exps["band"]) == ["z", "z"] and exps["cloudy"].sum() == 1
    assert len(list((out / "raw").glob("decam-mini_*.fits.fz"))) == 2
    phot = fitsio.read(out / "refcat" / "photometric.fits")
    assert {"mag_g", "mag_r", "mag_i", "mag_z", "magerr_z", "mag_J"} <= set(phot.dtype.names)
    assert np.isnan(phot["mag_J"]).any() and np.isfinite(phot["mag_J"]).any()
    astro = fitsio.read(out / "refcat" / "astrometric.fits")
    assert {"ra", "dec", "ra_error", "dec_error", "phot_g_mean_mag", "mag_z"} <= set(astro.dtype.names)
    assert main(["sim", "night", "--camera", "decam-mini", "--night", "2026-11-25", "--exposures", "1",
                 "--bands", "q", "--out", str(tmp_path / "bad")]) == EXIT_BAD_INPUT
    assert "band 'q'" in capsys.readouterr().err
    assert main(["sim", "night", "--camera", "decam-mini", "--night", "2026-13-01", "--exposures", "1",
                 "--out", str(tmp_path / "bad")]) == EXIT_BAD_INPUT


def test_refcats_cover_every_exposure_with_margin(night: dict) -> None:
    astro = fitsio.read(night["out"] / "refcat" / "astrometric.fits")
    fp = night["fp"]
    for e in night["exps"]:
        for ccd in fp.ccds:
            w = ccd_wcs(fp, ccd, e["ra"], e["dec"])
            corners = np.array(w.all_pix2world([-100, 611, -100, 611], [-100, -100, 1123, 1123], 0)).T
            assert np.all(corners[:, 0] > astro["ra"].min()) and np.all(corners[:, 0] < astro["ra"].max())
            assert np.all(corners[:, 1] > astro["dec"].min()) and np.all(corners[:, 1] < astro["dec"].max())
    truth = night["truth"]
    stars = truth[truth["is_star"]]
    assert len(astro) == len(stars)
    # Gaia-like errors: sub-mas for bright stars, the positions scattered by them
    bright = astro["phot_g_mean_mag"] < 18
    assert np.median(astro["ra_error"][bright]) < 0.2
    dd = (astro["dec"] - stars["dec"]) * 3.6e6
    assert np.std(dd / astro["dec_error"]) == pytest.approx(1.0, abs=0.1)


def test_compressed_calibs_round_trip(cfg, tmp_path) -> None:
    """Large cameras get compressed calibrations: bias and bpm exact, flats within half a quantization step."""
    from cosmodm_ops.sim.writer import CALIB_STEPS, write_calibs

    plan = plan_night(cfg, "2026-11-23", 1, ["g"], seed=2)
    sig = signature_source(plan)
    fp = plan.focal_plane
    write_calibs(tmp_path, fp, ["g"], sig, compress=True)
    for ccd in fp.ccds:
        s = sig(ccd, "g")
        with fitsio.FITS(str(tmp_path / "bias.fits")) as f:
            assert f[ccd.name].is_compressed()
            assert np.array_equal(f[ccd.name].read(), s.bias_e)
        assert np.array_equal(fitsio.read(tmp_path / "bpm.fits", ext=ccd.name), s.bpm())
        flat = fitsio.read(tmp_path / "flat_g.fits", ext=ccd.name)
        assert np.abs(flat - s.dome_flat).max() <= 0.5 * CALIB_STEPS["flat"] * 1.01
        star = fitsio.read(tmp_path / "starflat_g.fits", ext=ccd.name)
        assert np.abs(star - s.illum).max() <= 0.5 * CALIB_STEPS["starflat"] * 1.01


def test_nonlinear_crosstalk_above_onset(cfg) -> None:
    """Above ``src_nl`` the ghost follows the term's polynomial (DECam's model), below it the linear coefficient."""
    import dataclasses

    from cosmodm_ops.cameras.layout import CrosstalkCoeff

    fp = focal_plane(cfg.camera)
    term = CrosstalkCoeff(32, "B", 32, "A", 1e-3, src_nl=5000.0, poly=(2e-3, 0.0, 0.0))
    fp_nl = dataclasses.replace(fp, crosstalk=(term,))
    plan = plan_night(cfg, "2026-11-23", 1, ["r"], seed=3)
    spec = plan.exposures[0]
    ccd = fp.ccd("N1")
    ra, dec = ccd_wcs(fp, ccd, spec.ra, spec.dec).all_pix2world([100.3], [500.4], 0)
    one = Catalog(np.asarray(ra), np.asarray(dec), {"r": np.array([11.0], np.float32)}, np.array([True]),
                  np.zeros(1, np.float32), np.ones(1, np.float32), np.zeros(1, np.float32))
    hdus = X.simulate_exposure(fp_nl, spec, one, signature_source(plan), 3, threads=1)
    raw = {name: data.astype(np.float64) for name, data, _ in hdus}["N1"]
    src = _above_overscan(fp, "N1", raw, 0)
    vic = _above_overscan(fp, "N1", raw, 1)[:, ::-1] - np.median(_above_overscan(fp, "N1", raw, 1))
    for sel, coeff in ((src > 8000, 2e-3), ((src > 1500) & (src < 4000), 1e-3)):
        assert sel.sum() > 30
        c = float((vic[sel] * src[sel]).sum() / (src[sel] ** 2).sum())
        assert c == pytest.approx(coeff, rel=0.1)
