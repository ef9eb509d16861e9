"""``cosmodm bench clusters --rescore``: the current finder on saved image-level candidates, against truth.

A tiny run folder stands in for an image-level benchmark cut short: 4 of the 5 candidates of
``simulate_candidates(4, 1, 1)`` are there (a richness-150 cluster at z = 0.27, an empty position, and
two whose chain stopped early: ``no_warps``, ``no_coverage``), each ``targets/<name>/`` holding ``result.json`` and
per-band LDAC catalogues with the chain's columns, made from the catalogue-level observation of the
candidate's 0.4 deg tile (no pixels: the test is of the rescoring, not of SExtractor).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import fitsio
import numpy as np
import pytest

from cosmodm_ops.cli import main
from cosmodm_ops.clusters.bench import _patch, simulate_candidates
from cosmodm_ops.clusters.rescore import rescore

pytestmark = pytest.mark.unit

BANDS = "grizy"


def _ldac(cat: np.ndarray, band: str) -> np.ndarray:
    """The chain's dual-image columns of one band from a catalogue-level table."""
    dtype = [("NUMBER", "i4"), ("ALPHAWIN_J2000", "f8"), ("DELTAWIN_J2000", "f8"), ("MAG_AUTO", "f4"),
             ("MAGERR_AUTO", "f4"), ("MAG_DETMODEL", "f4"), ("MAGERR_DETMODEL", "f4"), ("FLAGS", "i2"),
             ("SPREAD_MODEL", "f4"), ("SPREADERR_MODEL", "f4")]
    out = np.zeros(len(cat), dtype)
    out["NUMBER"] = np.arange(1, len(cat) + 1)
    out["ALPHAWIN_J2000"], out["DELTAWIN_J2000"] = cat["ra"], cat["dec"]
    for ours, theirs in (("mag_auto", "MAG_AUTO"), ("magerr_auto", "MAGERR_AUTO"),
                         ("mag_detmodel", "MAG_DETMODEL"), ("magerr_detmodel", "MAGERR_DETMODEL")):
        out[theirs] = cat[f"{ours}_{band}"]
    out["SPREAD_MODEL"], out["SPREADERR_MODEL"] = cat["spread_model"], cat["spreaderr_model"]
    return out


def _save(folder: Path, c: dict, status: str, timings: dict) -> None:
    target = folder / "targets" / c["name"]
    target.mkdir(parents=True)
    # the products' paths are those of the machine that ran the chain: rescoring finds them by name
    result = {"name": c["name"], "status": status, "z_phot": 0.5, "richness": 1.0, "significance": 1.0,
              "detected": False, "missing_bands": [], "products": {}, "cpu_s": 200.0, "timings": timings}
    if c["name"] == "PSZ-SIM002":  # the QA candidate, with its saved repeatability (no SExtractor to redo it)
        result["qa_repeatability"] = {"band": "i", "warp_pairs": 4, "n_stars": 200, "rms_over_expected": 1.0,
                                      "bins": []}
    if status == "ok":
        _, cat, _ = _patch(c, 1)
        dra = (cat["ra"] - c["ra"]) * math.cos(math.radians(c["dec"]))
        cat = cat[(np.abs(dra) < 0.2) & (np.abs(cat["dec"] - c["dec"]) < 0.2)]  # the chain's 0.4 deg tile
        for b in BANDS:
            fitsio.write(str(target / f"catalog_{b}.fits"), _ldac(cat, b), extname="LDAC_OBJECTS")
            result["products"][f"catalog_{b}"] = f"/elsewhere/targets/{c['name']}/catalog_{b}.fits"
    (target / "result.json").write_text(json.dumps(result))


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cl_img")
    truth = simulate_candidates(4, 1, 1)
    _save(folder, truth[3], "ok", {"coadd_cpu_s": 30.0, "catalogue_finder_cpu_s": 100.0})
    _save(folder, truth[4], "ok", {"coadd_cpu_s": 40.0, "catalogue_finder_cpu_s": 140.0})
    _save(folder, truth[0], "no_warps", {})
    _save(folder, truth[2], "no_coverage", {"coadd_cpu_s": 50.0})
    return folder


def _checksums(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_rescore_measures_the_saved_candidates_against_truth(run_folder: Path, tmp_path: Path) -> None:
    before = _checksums(run_folder)
    fig = rescore(str(run_folder), 4, 1, 1, report_dir=str(tmp_path / "report"))
    assert fig["n_candidates"] == 4 and fig["n_clusters"] == 3  # 1 of the 5 has no result.json
    assert fig["statuses"] == {"ok": 2, "no_warps": 1, "no_coverage": 1}
    # the richness-150 cluster at z = 0.271: found again at its redshift, with about its richness; the
    # richness-48 one at z = 0.05 stays not found (no_coverage kept)
    assert fig["completeness_rich20"] == 0.5 and fig["n_detected"] == 1 and fig["purity"] == 1.0
    assert abs(fig["bias_dz"]) < 0.03 and fig["outlier_fraction"] == 0.0
    # one cluster's richness scatters at the catalogue level too (98 of 150 here, 102 at the true centre; 66 when
    # the second pass took the brightest member-like galaxy, 1.4' off, as its centre): a bound, not a measurement
    assert 0.5 < fig["richness_ratio_median"] < 1.4
    assert fig["max_null_significance"] < 5.0
    assert math.isnan(fig["saved_richness_ratio_median"])  # the saved results said 'not detected'
    # core-s from the saved chain timings (mean over the candidates that have them); the rescoring's own beside
    assert fig["core_s_per_candidate"] == pytest.approx(120.0)
    assert fig["coadd_core_s_per_candidate"] == pytest.approx(40.0)
    assert 0 < fig["rescore_finder_core_s_per_candidate"] < 30
    assert fig["qa_repeatability"] == {"band": "i", "warp_pairs": 4, "n_stars": 200, "rms_over_expected": 1.0}
    assert (tmp_path / "report" / "report.html").is_file()
    assert json.loads((tmp_path / "report" / "bench_clusters_rescore.json").read_text())["n_candidates"] == 4
    assert _checksums(run_folder) == before  # read only


def test_rescore_cli_json_line_and_bad_folder(run_folder: Path, tmp_path: Path, capsys) -> None:
    code = main(["bench", "clusters", "--rescore", "--n-clusters", "4", "--n-null", "1", "--out", str(run_folder),
                 "--report-dir", str(tmp_path), "--json"])
    assert code == 0
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(line) == {"sigma_dz", "outlier_fraction", "completeness_rich20", "purity", "core_s_per_candidate",
                         "n_candidates"}
    assert line["n_candidates"] == 4
    code = main(["bench", "clusters", "--rescore", "--out", str(tmp_path / "nothing")])
    err = capsys.readouterr().err
    assert code == 65 and "targets" in err and "image-level run" in err


def test_repeatability_stats_against_the_errors() -> None:
    from cosmodm_ops.clusters.repeatability import repeatability_stats

    rng = np.random.default_rng(5)
    mag = rng.uniform(16.0, 20.9, 4000)
    err = 0.005 * 10 ** (0.3 * (mag - 16.0))  # honest errors, growing to the faint end
    m1, m2 = mag + rng.normal(0, 1, mag.size) * err, mag + 0.01 + rng.normal(0, 1, mag.size) * err
    rows = repeatability_stats(m1, err, m2, err, [16.0, 17.0, 18.0, 19.0, 20.0, 21.0, 25.0, 26.0])
    assert [r["mag_lo"] for r in rows][:5] == [16.0, 17.0, 18.0, 19.0, 20.0]
    assert rows[-1]["mag_lo"] < 25.0  # the empty 25-26 bin is left out
    assert sum(r["n"] for r in rows) == 4000
    rows = rows[:5]
    for r in rows:
        assert r["median_dm"] == pytest.approx(-0.01, abs=0.25 * r["rms_expected"])
        assert r["rms_dm"] / r["rms_expected"] == pytest.approx(1.0, abs=0.12)
        assert r["nmad_dm"] / r["rms_expected"] == pytest.approx(1.0, abs=0.15)
    # errors that are half the truth show as a ratio of 2
    rows = repeatability_stats(m1, err / 2, m2, err / 2, [16.0, 22.0])
    assert rows[0]["rms_dm"] / rows[0]["rms_expected"] > 1.6
