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


def fake_exposure(camera: str, jobs: int, keep: str | None, seed: int, workdir: str | None, density: str,
                  ccds: int, previous_ccds: int, io_ccds: int, exposures_per_node_night: int) -> dict:
    keys = bench_cli.BENCHMARKS["exposure"][2]
    return {**dict.fromkeys(keys, 1.0), "camera": camera, "jobs": jobs, "keep": keep, "seed": seed,
            "workdir": workdir, "density": density, "ccds": ccds, "previous_ccds": previous_ccds,
            "io_ccds": io_ccds, "exposures_per_node_night": exposures_per_node_night}


def test_bench_exposure_passes_its_options_and_prints_the_contract_keys(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    target, text, keys = bench_cli.BENCHMARKS["exposure"]
    assert target == "cosmodm_ops.single_epoch.exposure_bench:exposure"
    monkeypatch.setitem(bench_cli.BENCHMARKS, "exposure", (f"{__name__}:fake_exposure", text, keys))
    argv = ["bench", "exposure", "--json", "--camera", "decam-mini", "--jobs", "3", "--keep", "/tmp/k"]
    assert main(argv) == 0
    line = json.loads(capsys.readouterr().out.strip())
    assert set(line) == {"wall_s", "cpu_total_s", "cpu_own_s", "cpu_astromatic_s", "core_min",
                         "core_min_ratio_vs_desdm", "own_share", "bytes_output", "bytes_naive", "bytes_ratio",
                         "n_ccds_ok", "core_minutes", "density_ratio_to_real", "io_ratio_read_write",
                         "io_ratio_written", "previous_core_minutes", "core_minutes_warm", "core_minutes_cold",
                         "io_ratio_read_write_warm", "io_ratio_read_write_cold", "exposures_per_node_night",
                         "amortization", "tools_core_minutes", "format_floor_s_per_ccd", "own_share_floor"}
    assert line["exposures_per_node_night"] == 10  # the option's default reaches the benchmark
    assert main(["bench", "exposure", "--camera", "decam-mini", "--jobs", "3"]) == 0
    out = capsys.readouterr().out
    assert "decam-mini" in out and "seed" in out  # the table shows every figure
