from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cosmodm_ops.coadd import locus as L
from cosmodm_ops.coadd import synthetic as syn
from tests.support import real_file


@pytest.fixture(scope="module")
def covey() -> L.Locus:
    return L.read_covey_locus(real_file("stellar_locus/covey_medianlocus.tbl"))


def test_reads_covey_columns_from_the_description(covey):
    assert {"u-g", "g-r", "r-i", "i-z", "z-J", "J-H", "H-K", "r-J"} <= set(covey.colours)
    assert covey.counts.min() >= 20 and 150 < len(covey.gi) <= 201
    # a row of the table (g-i = 1.00: g-r 0.73, r-i 0.27, i-z 0.12, z-J 1.01), lightly smoothed
    k = int(np.argmin(np.abs(covey.gi - 1.0)))
    assert covey.colours["g-r"][k] == pytest.approx(0.73, abs=0.01)
    assert covey.colours["r-J"][k] == pytest.approx(0.27 + 0.12 + 1.01, abs=0.02)


@pytest.mark.parametrize(
    ("seed", "offsets"),
    [(1, {"g": 0.12, "r": -0.07, "i": 0.05, "z": 0.1}), (2, {"g": -0.2, "r": 0.15, "i": 0.0, "z": -0.05})],
)
def test_recovers_absolute_zeropoints(covey, seed, offsets):
    mags, errs, truth = syn.locus_stars(2000, offsets, locus=covey, seed=seed)
    res = L.fit_locus(mags, errs, locus=covey)
    assert res.converged and res.absolute
    for b in "griz":
        assert abs(res.zeropoints[b] - truth[b]) < 0.020, (b, res.zeropoints, truth)
        assert 0 < res.errors[b] < 0.02
    # scatter: intrinsic 0.02 + noise 0.02 per band -> about 0.04 mag perpendicular to the locus
    for plane, value in res.scatter.items():
        assert 0.025 < value < 0.06, plane
    assert res.qa()["n_locus_stars"] == res.n_used > 1800


def test_robust_to_outliers_and_relative_without_j(covey):
    mags, errs, truth = syn.locus_stars(2000, locus=covey, seed=3)
    rng = np.random.default_rng(0)
    bad = rng.choice(2000, 200, replace=False)  # 10% galaxies/blends with colours off the locus
    for b in "giz":
        mags[b][bad] += rng.normal(0, 0.5, 200)
    res = L.fit_locus(mags, errs, locus=covey)
    for b in "griz":
        assert abs(res.zeropoints[b] - truth[b]) < 0.020
    assert (~res.used[bad]).mean() > 0.7
    no_j = {b: v for b, v in mags.items() if b != "J"}
    rel = L.fit_locus(no_j, errs, locus=covey)
    assert not rel.absolute and abs(rel.zeropoints["r"]) < 1e-12
    for b in "giz":  # differences to r still right
        assert abs(rel.zeropoints[b] - (truth[b] - truth["r"])) < 0.020


def test_real_slr_table(covey, tmp_path: Path):
    tab = L.read_star_table(real_file("stellar_locus/slr_low_reddening.ctab"))
    assert len(tab["g"]) == 1000 and np.isfinite(tab["J"]).sum() == 170
    good = np.all([tab[f"{b}_err"] < 0.05 for b in "griz"], axis=0)
    res = L.fit_locus(
        {b: tab[b][good] for b in "grizJ"}, {b: tab[f"{b}_err"][good] for b in "grizJ"}, locus=covey
    )
    assert res.converged and res.absolute and res.n_with_j > 100
    assert res.n_used > 0.8 * res.n_stars
    for b in "griz":
        assert abs(res.zeropoints[b]) < 0.15  # a calibrated survey: small corrections
    assert res.scatter["g-r vs r-i"] < 0.05 and res.scatter["r-i vs i-z"] < 0.05
    assert res.scatter["g-r vs r-J"] < 0.08
    png = L.plot_locus(res, tmp_path / "locus.png", locus=covey)
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 10000


def test_errors_name_the_problem(covey, tmp_path: Path):
    with pytest.raises(L.LocusError, match="missing"):
        L.fit_locus({"g": np.zeros(3)}, locus=covey)
    with pytest.raises(L.LocusError, match="only 3 stars"):
        L.fit_locus({b: np.zeros(3) for b in "griz"}, locus=covey)
    f = tmp_path / "x.tbl"
    f.write_text("not a locus\n")
    with pytest.raises(L.LocusError, match="byte-by-byte"):
        L.read_covey_locus(f)


def test_match_reference_j():
    ra = np.array([10.0, 10.001, 10.002])
    dec = np.array([-5.0, -5.0, -5.0])
    ref_ra = np.array([10.001 + 0.5 / 3600, 10.0])
    ref_dec = np.array([-5.0, -5.0 + 3.0 / 3600])
    j = L.match_reference(ra, dec, ref_ra, ref_dec, np.array([14.2, 15.0]), radius_arcsec=1.0)
    assert np.isnan(j[0]) and j[1] == 14.2 and np.isnan(j[2])
    assert np.isnan(L.match_reference(ra, dec, np.array([]), np.array([]), np.array([]))).all()
