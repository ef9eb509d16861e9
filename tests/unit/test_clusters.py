"""Cluster follow-up against simulation truth: photo-z, richness, nulls, bad candidate lists, missing bands."""

from __future__ import annotations

import math
from pathlib import Path

import fitsio
import numpy as np
import pytest

from cosmodm_ops.clusters.catalog import CandidateListError, read_candidates, write_cluster_catalogue
from cosmodm_ops.clusters.finder import Candidate, FinderConfig, Footprint, run, select_galaxies
from cosmodm_ops.clusters.profile import sample_radii
from cosmodm_ops.clusters.redseq import RICHNESS_DELTA_MAG, RedSequenceModel
from cosmodm_ops.sim.catalog_obs import Survey, observe
from cosmodm_ops.sim.clusters import ClusterSpec, make_field, truth_table

pytestmark = pytest.mark.unit

BOX = ((30.0, 31.2), (-10.6, -9.4))
FP = Footprint(30.0, 31.2, -10.6, -9.4)


def _patch(z: float, lam: int, seed: int):
    rng = np.random.default_rng(seed)
    specs = [ClusterSpec("c", 30.6, -10.0, z, lam)] if lam else []
    objects = make_field(*BOX, specs, rng)
    return objects, observe(objects, Survey(), rng)


@pytest.fixture(scope="module")
def cluster_z03():
    return _patch(0.3, 60, 3)


def test_model_colours_rise_with_redshift() -> None:
    m = RedSequenceModel()
    z = np.linspace(0.05, 0.7, 30)
    assert np.all(np.diff(m.colour("g-r", z)) > 0) and np.all(np.diff(m.colour("r-i", z)) > 0)
    assert np.all(np.diff(m.mstar(z)) > 0)


def test_nfw_radii_are_concentrated() -> None:
    r = sample_radii(np.random.default_rng(0), 50000)
    assert 0.0 <= r.min() and r.max() <= 1.0
    assert 0.38 < float(np.median(r)) < 0.46  # c = 4 projected NFW truncated at R_max: median ~0.42


def test_injected_members_in_truth(cluster_z03) -> None:
    objects, _ = cluster_z03
    t = truth_table(objects)
    mem = t[(t["cluster_id"] == 0) & t["is_red"]]
    mstar = float(RedSequenceModel().mstar(0.3))
    assert int((mem["mag_i"] < mstar + RICHNESS_DELTA_MAG).sum()) == pytest.approx(60, abs=3)
    assert int(t["is_bcg"].sum()) == 1
    assert float(np.median(mem["mag_g"] - mem["mag_r"])) == pytest.approx(1.41, abs=0.05)


def test_photoz_and_richness_of_injected_cluster(cluster_z03) -> None:
    _, cat = cluster_z03
    cfg = FinderConfig(n_boot=10)
    gal = cat[select_galaxies(cat, cfg)]
    r = run(Candidate("c", 30.61, -10.01, 3.0), gal, FP, cfg)
    assert r.detected and r.significance > 10
    assert abs(r.z_phot - 0.3) / 1.3 < 0.02
    assert 0.6 < r.richness / 60 < 1.5
    assert math.hypot(r.bcg_ra - 30.6, r.bcg_dec + 10.0) < 1e-3  # the injected BCG, found from a 0.7' offset


def test_null_candidate_below_threshold() -> None:
    _, cat = _patch(0.3, 0, 11)
    cfg = FinderConfig(n_boot=5)
    r = run(Candidate("null", 30.6, -10.0, 3.0), cat[select_galaxies(cat, cfg)], FP, cfg)
    assert r.status == "ok" and not r.detected and r.significance < 5


def test_missing_band_is_named_and_finder_still_works(cluster_z03) -> None:
    _, cat = cluster_z03
    keep = [n for n in cat.dtype.names if not n.endswith("_g")]
    cut = np.zeros(len(cat), dtype=[(n, cat.dtype[n]) for n in keep])
    for n in keep:
        cut[n] = cat[n]
    cfg = FinderConfig(n_boot=5)
    r = run(Candidate("c", 30.6, -10.0), cut[select_galaxies(cut, cfg)], FP, cfg)
    assert r.unused_colours == ["g-r (no g band)"]
    assert abs(r.z_phot - 0.3) / 1.3 < 0.03


def test_candidate_outside_catalogue_is_reported(cluster_z03) -> None:
    _, cat = cluster_z03
    r = run(Candidate("far", 200.0, 40.0), cat, FP, FinderConfig())
    assert r.status == "no_coverage" and not r.detected and "footprint" in r.message


@pytest.mark.parametrize(("text", "needle"), [
    ("NAME,RA\nA,1.0\n", "missing column(s) DEC"),
    ("NAME,RA,DEC\nA,1.0,2.0\nB,abc,3.0\n", "row 2, column RA: 'abc' is not a number"),
    ("NAME,RA,DEC\nA,1.0,2.0\nA,3.0,3.0\n", "row 2: duplicate candidate name 'A' (first in row 1)"),
    ("NAME,RA,DEC\nA,400.0,2.0\n", "row 1: RA 400.0"),
    ("NAME,RA,DEC\n", "no candidates"),
])
def test_bad_candidate_lists(tmp_path: Path, text: str, needle: str) -> None:
    p = tmp_path / "cands.csv"
    p.write_text(text)
    with pytest.raises(CandidateListError) as info:
        read_candidates(p)
    assert needle in str(info.value) and str(p) in str(info.value)


def test_planck_like_fits_list_and_product(tmp_path: Path) -> None:
    t = np.zeros(2, dtype=[("NAME", "S20"), ("RA", "f8"), ("DEC", "f8"), ("POS_ERR", "f4"), ("SNR", "f4")])
    t["NAME"], t["RA"], t["DEC"], t["POS_ERR"] = [b"PSZ2 G001", b"PSZ2 G002"], [10.0, 20.0], [-5.0, 5.0], [2.0, 1.5]
    fitsio.write(str(tmp_path / "psz.fits"), t)
    cands = read_candidates(tmp_path / "psz.fits")
    assert [c.name for c in cands] == ["PSZ2 G001", "PSZ2 G002"] and cands[1].radius_arcmin == 1.5
    results = [run(c, np.zeros(0, dtype=[("ra", "f8"), ("dec", "f8")]), FP, FinderConfig()) for c in cands]
    prod = fitsio.read(str(write_cluster_catalogue(results, tmp_path / "clusters.fits",
                                                    {"PSZ2 G001": ("reject", "alice")})))
    assert {"name", "ra", "dec", "z_phot", "z_err", "richness", "significance", "confirmed",
            "who_confirmed"} <= set(prod.dtype.names)
    assert prod["confirmed"][0].strip() == "no" and prod["who_confirmed"][0].strip() == "alice"
    assert prod["status"][1].strip() == "no_coverage"


def test_cli_bad_list_exits_65_without_traceback(tmp_path: Path, capsys) -> None:
    from cosmodm_ops.cli import main

    p = tmp_path / "c.csv"
    p.write_text("NAME,RA,DEC\nA,x,1\n")
    code = main(["clusters", "find", "--candidates", str(p), "--catalog", str(p), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 65 and "row 1, column RA" in err and "Traceback" not in err
