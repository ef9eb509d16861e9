"""The image-level cluster chain on a tiny simulated field: warps -> tile -> coadds -> catalogues -> finder.

One small patch of PS1-like warps (0.5" pixels, 2 x 2 skycells of 700 pixels, griz: no y warps)
with a rich cluster at z = 0.45; three candidates through ``run_target(..., warps=DIR)``:

- the cluster: status ok, detected, z_phot within 0.05 (1 + z) of the truth, the BCG near the
  injected one, y named in ``missing_bands`` and the z-y colour in ``unused_colours``, every warp
  used listed in ``inputs``, the products there;
- a position 2 degrees away: ``no_warps`` (reported in result.json, not an error).
"""

from __future__ import annotations

import json
import math

import pytest

from cosmodm_ops.clusters.finder import Candidate
from cosmodm_ops.clusters.target import run_target
from cosmodm_ops.sim.clusters import ClusterSpec
from cosmodm_ops.sim.clusterwarps import WarpField, write_patch

pytestmark = pytest.mark.astromatic

Z_TRUE, RA, DEC = 0.45, 150.0, 2.0
CONFIG = {"tile_deg": 0.18, "psf_size": 15, "detect_thresh": 2.0, "keep_coadds": True,
          "finder": {"background_exclusion_max_deg": 0.06}}


@pytest.fixture(scope="module")
def warps(tmp_path_factory):
    out = tmp_path_factory.mktemp("warps")
    field = WarpField(skycell_size=700, overlap=30, bands=("g", "r", "i", "z"))
    info = write_patch(out, "TINY", RA, DEC, [ClusterSpec("TINY", RA + 0.005, DEC - 0.004, Z_TRUE, 100)],
                       seed=3, projection_cell=2001, field=field)
    return out, info


def test_cluster_recovered_with_missing_band(warps, tmp_path):
    folder, info = warps
    out = tmp_path / "CL1"
    res = run_target(Candidate("CL1", RA, DEC, 3.0), out, warps=folder, config=CONFIG)
    assert json.loads((out / "result.json").read_text()) == res
    assert res["status"] == "ok", res["message"]
    assert res["detected"] and res["significance"] >= 5.0
    assert abs(res["z_phot"] - Z_TRUE) <= 0.05 * (1 + Z_TRUE)
    assert math.hypot((res["bcg_ra"] - RA - 0.005) * math.cos(math.radians(DEC)), res["bcg_dec"] - DEC + 0.004) \
        < 2.0 / 3600
    assert res["missing_bands"] == ["y"]
    assert any(u.startswith("z-y") for u in res["unused_colours"])
    assert sorted(res["inputs"]) == sorted(info["warps"])
    for key in ("coadd_g", "coadd_i", "catalog_r", "catalog_z", "pseudocolour", "curve", "inspection"):
        assert (out / res["products"][key].rsplit("/", 1)[1]).is_file(), key
    assert "catalog_y" not in res["products"]
    assert res["cpu_s"] > 0
    assert not list(tmp_path.glob("CL1.tmp-*"))


def test_candidate_without_warps(warps, tmp_path):
    folder, _ = warps
    res = run_target(Candidate("FAR", RA + 2.0, DEC), tmp_path / "FAR", warps=folder, config=CONFIG)
    assert res["status"] == "no_warps"
    assert "overlaps" in res["message"] and res["inputs"] == []
    assert res["missing_bands"] == ["g", "r", "i", "z", "y"]
    assert (tmp_path / "FAR" / "result.json").is_file()


def test_cli_warps_with_one_yaml_for_finder_and_chain(warps, tmp_path, capsys):
    """``cosmodm clusters target --warps``: one YAML holds the finder (``clusters:``) and the chain (``chain:``);
    a far candidate is ``no_warps`` (exit 0, reported); a bad chain key is exit 65 naming it."""
    from cosmodm_ops.cli import main

    folder, _ = warps
    (tmp_path / "cands.csv").write_text(f"NAME,RA,DEC\nFAR,{RA + 2.0},{DEC}\n")
    cfg = tmp_path / "followup.yaml"
    cfg.write_text("clusters:\n  min_significance: 4.0\nchain:\n  tile_deg: 0.18\n  psf_size: 15\n")
    args = ["clusters", "target", "--candidates", str(tmp_path / "cands.csv"), "--name", "FAR",
            "--warps", str(folder), "--out", str(tmp_path / "FAR"), "--config", str(cfg)]
    assert main(args) == 0
    doc = json.loads((tmp_path / "FAR" / "result.json").read_text())
    assert doc["status"] == "no_warps" and doc["inputs"] == []
    cfg.write_text("chain:\n  tile_size: 0.18\n")
    args[-3] = str(tmp_path / "FAR2")
    assert main(args) == 65
    err = capsys.readouterr().err
    assert "tile_size" in err and str(cfg) in err and not (tmp_path / "FAR2").exists()
