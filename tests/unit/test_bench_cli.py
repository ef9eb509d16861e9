from __future__ import annotations

import json

import pytest

from cosmodm_ops import bench_cli
from cosmodm_ops.cli import main


def fake_bench() -> dict:
    return {"crlb_ratio": 1.0, "tile_ms": 1.0, "survey_100k_s": 2.0, "survey_100k_peak_gb": 0.5, "extra": 3}


def test_bench_photcal_prints_the_contract_json(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    target, text, keys = bench_cli.BENCHMARKS["photcal"]
    assert target == "cosmodm_ops.coadd.benchmarks:photcal"
    monkeypatch.setitem(bench_cli.BENCHMARKS, "photcal", (f"{__name__}:fake_bench", text, keys))
    assert main(["bench", "photcal", "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    assert json.loads(out[0]) == {
        "crlb_ratio": 1.0,
        "tile_ms": 1.0,
        "survey_100k_s": 2.0,
        "survey_100k_peak_gb": 0.5,
    }
    assert main(["bench", "photcal"]) == 0
    out = capsys.readouterr().out
    assert "tile_ms" in out and "extra" in out  # the table shows every figure


def fake_tile() -> dict:
    return {"tile": "T", "stage_swarp_s": 1.5, "stage_homogenize_s": 2.0, "total_s": 6.0, "swarp_bare_s": 1.2,
            "ours_over_swarp": 5.0}


def test_bench_tile_prints_every_stage(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    target, text, keys = bench_cli.BENCHMARKS["tile"]
    assert target == "cosmodm_ops.coadd.benchmarks:tile" and keys == ()
    monkeypatch.setitem(bench_cli.BENCHMARKS, "tile", (f"{__name__}:fake_tile", text, keys))
    assert main(["bench", "tile", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip()) == fake_tile()
