"""The finder's galaxy selection (SPREAD_MODEL + stellar-locus veto) and the simulator's SPREAD_MODEL, against truth."""

from __future__ import annotations

import numpy as np
import pytest

from cosmodm_ops.clusters.finder import FinderConfig, select_galaxies
from cosmodm_ops.clusters.redseq import RICHNESS_DELTA_MAG, RedSequenceModel
from cosmodm_ops.clusters.starveto import locus_chi2, locus_curve
from cosmodm_ops.sim.catalog_obs import Survey, observe, spread_model, spread_size_term
from cosmodm_ops.sim.clusters import BANDS, ClusterSpec, make_field

pytestmark = pytest.mark.unit

MODEST = FinderConfig(compact_galaxies=False)


def _rows(mags: list[dict[str, float]], err: float, sm: list[float], se: list[float]) -> np.ndarray:
    cols = [("spread_model", "f4"), ("spreaderr_model", "f4")]
    cols += [(f"{p}_{b}", "f4") for b in BANDS for p in ("mag_auto", "magerr_auto", "mag_detmodel", "magerr_detmodel")]
    out = np.zeros(len(mags), dtype=cols)
    out["spread_model"], out["spreaderr_model"] = sm, se
    for k, m in enumerate(mags):
        for b in BANDS:
            out[k][f"mag_auto_{b}"] = out[k][f"mag_detmodel_{b}"] = m[b]
            out[k][f"magerr_auto_{b}"] = out[k][f"magerr_detmodel_{b}"] = err
    return out


def _red_member(z: float, i: float) -> dict[str, float]:
    m = RedSequenceModel()
    c = {n: float(m.colour(n, z)) for n in ("g-r", "r-i", "i-z", "z-y")}
    return {"g": i + c["r-i"] + c["g-r"], "r": i + c["r-i"], "i": i, "z": i - c["i-z"], "y": i - c["i-z"] - c["z-y"]}


def _locus_star(i: float, k: int) -> dict[str, float]:
    gr, ri, iz = locus_curve()[k]
    return {"g": i + ri + gr, "r": i + ri, "i": i, "z": i - iz, "y": i - iz - 0.1}


def test_faint_compact_member_kept_and_locus_star_vetoed() -> None:
    k_mdwarf = int(np.argmin(np.abs(locus_curve()[:, 1] - 1.0)))  # an M dwarf with r-i = 1.0, as a z = 0.6 member
    rows = _rows([_red_member(0.6, 21.5), _locus_star(21.5, k_mdwarf)], 0.08, [-0.002, -0.001], [0.003, 0.003])
    assert not select_galaxies(rows, MODEST).any()  # 'modest' calls both stars: -0.002 + 5/3 x 0.003 < 0.005
    assert select_galaxies(rows, FinderConfig()).tolist() == [True, False]
    chi2, ncol = locus_chi2(rows)
    assert ncol.tolist() == [3, 3] and chi2[1] < 0.5
    # the member is 0.42 mag off the locus (in g-r): chi2 0.42**2 / (2 x 0.08**2 + 0.05**2) = 11.6 > 11.34 (99%, 3 colours)
    assert chi2[0] == pytest.approx(11.6, abs=0.3)


def test_without_usable_g_a_faint_object_is_kept() -> None:
    """In r-i and i-z alone a z = 0.6 member lies within 0.07 of the M dwarfs: without g nothing vetoes it."""
    k_mdwarf = int(np.argmin(np.abs(locus_curve()[:, 1] - 1.0)))
    rows = _rows([_locus_star(21.5, k_mdwarf)], 0.08, [0.0], [0.003])
    rows["magerr_detmodel_g"] = 0.5
    assert select_galaxies(rows, FinderConfig()).tolist() == [True]


def test_bright_threshold_falls_with_the_spread_error() -> None:
    """Brighter than i 20.5: SPREAD_MODEL decides, a star at +0.0011 stays out, a compact galaxy at 0.003 gets in."""
    gal = _red_member(0.5, 19.5)
    rows = _rows([gal, gal, gal], 0.02, [0.0011, 0.003, 0.003], [0.0002, 0.0003, 0.001])
    assert select_galaxies(rows, MODEST).tolist() == [False, False, False]
    # star: 0.0011 < 0.0011 + 3 x 0.00036; compact: 0.003 > 0.0011 + 3 x 0.00042; noisy: 0.003 < 0.0011 + 3 x 0.00104
    assert select_galaxies(rows, FinderConfig()).tolist() == [False, True, False]


def test_simulated_spread_model_follows_the_image_level_calibration() -> None:
    rng = np.random.default_rng(5)
    n = 4000
    x = np.full(n, 0.5)
    assert float(spread_size_term(np.array([0.5]))[0]) == pytest.approx(0.0118, abs=2e-4)
    bright, _ = spread_model(x, np.full(n, 19.0), np.zeros(n, bool), rng)
    faint, err = spread_model(x, np.full(n, 22.25), np.zeros(n, bool), rng)
    star, serr = spread_model(np.zeros(n), np.full(n, 18.25), np.ones(n, bool), rng)
    assert float(np.median(bright)) == pytest.approx(0.954 * 0.0118 + 0.0012, abs=4e-4)  # image: 0.0128 at x 0.45-0.6
    assert float(np.median(faint)) == pytest.approx(-1.189 * 0.0118 - 0.00105, abs=1e-3)  # image: negative past i 21.5
    assert float(np.median(star)) == pytest.approx(0.00099, abs=5e-5)
    assert float(np.median(serr)) == pytest.approx(0.00024, rel=0.05) and float(np.median(err)) == pytest.approx(
        0.00663, rel=0.05)


@pytest.fixture(scope="module")
def high_z_patch():
    rng = np.random.default_rng(7)
    objects = make_field((30.0, 30.6), (-10.3, -9.7), [ClusterSpec("c", 30.3, -10.0, 0.65, 50)], rng)
    return objects, observe(objects, Survey(), rng)


def test_members_at_z065_kept_bright_stars_not(high_z_patch) -> None:
    objects, cat = high_z_patch
    j = cat["truth_index"]
    mstar = float(RedSequenceModel().mstar(0.65))
    counted = (objects.cluster_id[j] == 0) & objects.is_red[j] & (objects.mags["i"][j] < mstar + RICHNESS_DELTA_MAG)
    star = objects.is_star[j]
    old, new = select_galaxies(cat, MODEST), select_galaxies(cat, FinderConfig())
    assert counted.sum() >= 40
    assert old[counted].mean() < 0.6  # 'modest' loses the compact members (image level: 11 of 32 kept at z 0.67)
    assert new[counted].mean() >= 0.9
    bright_star = star & (cat["mag_auto_i"] < 20.5)
    assert new[bright_star].mean() < 0.005
    assert new[~star].mean() > old[~star].mean()


def test_spread_table_measured_again_from_a_saved_run(tmp_path) -> None:
    """Round trip: a saved candidate whose catalogue is observed with SPREAD_TABLE gives SPREAD_TABLE back."""
    import json

    import fitsio

    from cosmodm_ops.clusters.bench import simulate_candidates
    from cosmodm_ops.clusters.spreadcal import match_run, spread_table
    from cosmodm_ops.sim.catalog_obs import SPREAD_TABLE
    from cosmodm_ops.sim.clusterwarps import WarpField, patch_box

    k = 37
    c = simulate_candidates(48, 16, 1)[k]
    objects = make_field(*patch_box(c["ra"], c["dec"], WarpField()), [ClusterSpec(c["name"], c["ra"], c["dec"], c["z"],
                         c["richness"])], np.random.default_rng([1, 1000 + k]))
    cat = observe(objects, Survey(), np.random.default_rng(3))
    target = tmp_path / "targets" / c["name"]
    target.mkdir(parents=True)
    ldac = np.zeros(len(cat), [("ALPHAWIN_J2000", "f8"), ("DELTAWIN_J2000", "f8"), ("FLAGS", "i2"), ("MAG_AUTO", "f4"),
                               ("SPREAD_MODEL", "f4"), ("SPREADERR_MODEL", "f4")])
    ldac["ALPHAWIN_J2000"], ldac["DELTAWIN_J2000"], ldac["MAG_AUTO"] = cat["ra"], cat["dec"], cat["mag_auto_i"]
    ldac["SPREAD_MODEL"], ldac["SPREADERR_MODEL"] = cat["spread_model"], cat["spreaderr_model"]
    fitsio.write(str(target / "catalog_i.fits"), ldac, extname="LDAC_OBJECTS")
    (target / "result.json").write_text(json.dumps({"status": "ok", "products": {"catalog_i": "/x/catalog_i.fits"}}))
    rows = match_run(tmp_path)
    assert len(rows) > 0.95 * len(cat) and set(rows["cand"]) == {k}
    table = spread_table(rows)
    want = {round(float(r[0]), 2): r for r in SPREAD_TABLE}
    for r in table:
        w = want[round(float(r[0]), 2)]
        if r[0] <= 20.0:  # bright: stars at +0.001, galaxies at ~0.95 f; errors smooth in magnitude
            assert r[1] == pytest.approx(w[1], abs=0.1) and r[2] == pytest.approx(w[2], abs=3e-4)
            assert r[5] == pytest.approx(w[5], rel=0.25) and r[6] == pytest.approx(w[6], rel=0.25)
    faint = table[table[:, 0] >= 21.75]
    assert len(faint) and (faint[:, 1] < -0.3).all()  # past i 21.5 a galaxy's SPREAD_MODEL falls with its size
