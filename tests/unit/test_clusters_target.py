"""``cosmodm clusters target`` (one candidate, a follow-up campaign's item) and the follow-up's input checks.

A small catalogue-level field (``clusters sim``: two clusters and an empty position) serves every test:
the result.json contract against truth, no_coverage, a missing band, the inspection picture on a
synthetic pseudo-colour image, and the bad-input messages (file, row, column) of the command and of
the DAG's validation step.
"""

from __future__ import annotations

import json
from pathlib import Path

import fitsio
import numpy as np
import pytest

from cosmodm_ops.cli import main
from cosmodm_ops.clusters.followup import simulate_field
from cosmodm_ops.clusters.target import RESULT_KEYS

pytestmark = pytest.mark.unit

SPECS = [(0.25, 60), (0.45, 50)]


@pytest.fixture(scope="module")
def field(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cf_field")
    simulate_field(SPECS, 1, 5, out)
    return out


def _target(capsys, *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["clusters", "target", *args])
    return code, capsys.readouterr().err


def test_target_writes_the_result_contract(field: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "SIM-CL00"
    code, err = _target(capsys, "--candidates", str(field / "candidates.csv"), "--name", "SIM-CL00",
                        "--catalog", str(field / "catalog.fits"), "--out", str(out))
    assert code == 0, err
    doc = json.loads((out / "result.json").read_text())
    assert tuple(doc) == RESULT_KEYS
    assert doc["status"] == "ok" and doc["detected"] and doc["significance"] >= 5
    assert abs(doc["z_phot"] - 0.25) / 1.25 < 0.03
    assert doc["inputs"] == [str((field / "catalog.fits").resolve())]
    assert doc["products"] == {"curve": str(out / "curve.png")} and (out / "curve.png").stat().st_size > 1000
    assert doc["missing_bands"] == [] and doc["unused_colours"] == [] and doc["cpu_s"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["SIM-CL00"]  # no DIR.tmp-<pid> left


def test_outside_the_catalogue_is_reported_not_a_crash(field: Path, tmp_path: Path, capsys) -> None:
    cands = tmp_path / "far.csv"
    cands.write_text("NAME,RA,DEC\nFAR-1,200.0,-30.0\n")
    code, err = _target(capsys, "--candidates", str(cands), "--name", "FAR-1", "--catalog",
                        str(field / "catalog.fits"), "--out", str(tmp_path / "far"))
    doc = json.loads((tmp_path / "far" / "result.json").read_text())
    assert code == 0, err
    assert (doc["status"], doc["z_phot"], doc["products"]) == ("no_coverage", None, {})


def test_missing_band_is_named(field: Path, tmp_path: Path, capsys) -> None:
    cat = fitsio.read(str(field / "catalog.fits"))
    keep = [n for n in cat.dtype.names if not n.lower().endswith(("_z", "_y"))]
    fitsio.write(str(tmp_path / "no_zy.fits"), cat[keep], clobber=True)
    code, err = _target(capsys, "--candidates", str(field / "candidates.csv"), "--name", "SIM-CL01",
                        "--catalog", str(tmp_path / "no_zy.fits"), "--out", str(tmp_path / "o"))
    doc = json.loads((tmp_path / "o" / "result.json").read_text())
    assert code == 0, err
    assert doc["missing_bands"] == ["z", "y"]
    assert any(u.startswith("i-z") and "no z band" in u for u in doc["unused_colours"]), doc["unused_colours"]
    assert doc["status"] == "ok" and abs(doc["z_phot"] - 0.45) / 1.45 < 0.05


def test_inspection_picture_on_a_pseudocolour_image(field: Path, tmp_path: Path, capsys) -> None:
    from astropy.io import fits
    from astropy.wcs import WCS
    from matplotlib.image import imsave

    line = (field / "candidates.csv").read_text().splitlines()[1].split(",")
    w = WCS(naxis=2)
    w.wcs.ctype, w.wcs.crval = ["RA---TAN", "DEC--TAN"], [float(line[1]), float(line[2])]
    w.wcs.crpix, w.wcs.cdelt = [100.5, 100.5], [-0.005, 0.005]
    fits.PrimaryHDU(np.zeros((200, 200), np.float32), header=w.to_header()).writeto(tmp_path / "coadd.fits")
    imsave(tmp_path / "rgb.png", np.random.default_rng(1).integers(0, 255, (200, 200, 3), dtype=np.uint8))
    code, err = _target(capsys, "--candidates", str(field / "candidates.csv"), "--name", "SIM-CL00",
                        "--catalog", str(field / "catalog.fits"), "--out", str(tmp_path / "p"),
                        "--pseudocolour", str(tmp_path / "rgb.png"), "--pseudocolour-wcs", str(tmp_path / "coadd.fits"))
    doc = json.loads((tmp_path / "p" / "result.json").read_text())
    assert code == 0, err
    assert doc["products"]["inspection"] == str(tmp_path / "p" / "inspection.png")
    assert (tmp_path / "p" / "inspection.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(("text", "needle"), [
    ("NAME,RA\nA,10\n", "missing column(s) DEC"),
    ("NAME,RA,DEC\nA,10,1\nB,ten,2\n", "row 2, column RA: 'ten' is not a number"),
    ("NAME,RA,DEC\nA,10,1\nA,11,2\n", "row 2: duplicate candidate name 'A' (first in row 1)"),
])
def test_bad_candidate_lists_exit_65_naming_row_and_column(field: Path, tmp_path: Path, capsys, text: str,
                                                           needle: str) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(text)
    code, err = _target(capsys, "--candidates", str(bad), "--name", "A", "--catalog", str(field / "catalog.fits"),
                        "--out", str(tmp_path / "o"))
    assert code == 65 and str(bad) in err and needle in err, err
    assert not (tmp_path / "o").exists()


def test_unknown_name_exits_65(field: Path, tmp_path: Path, capsys) -> None:
    code, err = _target(capsys, "--candidates", str(field / "candidates.csv"), "--name", "NOPE", "--catalog",
                        str(field / "catalog.fits"), "--out", str(tmp_path / "o"))
    assert code == 65 and "no candidate named 'NOPE'" in err and "SIM-CL00" in err


def test_followup_validation_names_file_row_and_column(field: Path, tmp_path: Path) -> None:
    from cosmodm_ops.campaign import CampaignInputError
    from cosmodm_ops.workflows.followup import validate_followup

    bad = tmp_path / "bad.csv"
    bad.write_text("NAME,RA,DEC\nA,10,1\nB,11,north\n")
    with pytest.raises(CampaignInputError, match=r"bad\.csv: row 2, column DEC: 'north' is not a number"):
        validate_followup({"candidates": str(bad), "catalog": [str(field / "catalog.fits")]})
    with pytest.raises(CampaignInputError, match="give exactly one input"):
        validate_followup({"candidates": str(field / "candidates.csv")})
    req = validate_followup({"candidates": str(field / "candidates.csv"), "catalog": f"{field / 'catalog.fits'}"})
    assert req["names"] == ["SIM-CL00", "SIM-CL01", "SIM-NULL00"] and req["min_significance"] == 5.0


def test_angular_diameter_distance_matches_astropy() -> None:
    from astropy.cosmology import FlatLambdaCDM

    from cosmodm_ops.clusters.redseq import _da_table

    z, da = _da_table()
    ref = FlatLambdaCDM(H0=70.0, Om0=0.3).angular_diameter_distance(z).value
    assert np.max(np.abs(da / ref - 1.0)) < 1e-6


def test_followup_campaign_items_have_unique_keys_and_picture_tags(field: Path, tmp_path: Path, monkeypatch) -> None:
    from cosmodm_ops.workflows.campaign import store_for
    from cosmodm_ops.workflows.followup import create_followup, validate_followup

    monkeypatch.setenv("COSMODM_DB", f"sqlite:///{tmp_path / 'a.db'}")
    monkeypatch.setenv("COSMODM_ARCHIVE_ROOT", str(tmp_path / "archive"))
    cands = tmp_path / "c.csv"
    cands.write_text("NAME,RA,DEC\nPSZ2 G1+2,150.5,2.5\nPSZ2_G1+2,151.0,2.6\n")
    req = validate_followup({"candidates": str(cands), "catalog": [str(field / "catalog.fits")],
                             "min_significance": 4})
    plan = create_followup(req, source="t1")
    assert create_followup(req, source="t1")["campaign"] == plan["campaign"]  # one campaign per source
    items = store_for("demo", "local").items(plan["campaign"])
    assert [it["item_key"] for it in items] == ["cluster_followup:demo:PSZ2_G1+2", "cluster_followup:demo:PSZ2_G1+2-row2"]
    assert [it["spec"]["band"] for it in items] == ["PSZ2_G1+2", "PSZ2_G1+2-row2"]
    assert items[0]["spec"]["args"][:4] == ["--candidates", str(cands.resolve()), "--name", "PSZ2 G1+2"]
    assert items[0]["spec"]["args"][-2:] == ["--min-significance", "4.0"]
