"""The node's calibration cache end to end on a simulated decam-mini exposure (`cosmodm sim night`, the raw path):
products byte-identical and catalogs equal with the cache off, cold and warm; the warm job reads nothing of the
calibration files on the shared disk (strace) and its manifest says so."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import fitsio
import numpy as np
import pytest

from cosmodm_ops.cli import EXIT_OK, main
from cosmodm_ops.manifest import read_manifest
from cosmodm_ops.single_epoch.iotrace import count_strace, traced_argv
from tests.support import need_binary

pytestmark = pytest.mark.astromatic


@pytest.fixture(scope="module")
def night(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sim_night")
    argv = ["sim", "night", "--camera", "decam-mini", "--night", "2026-11-23", "--exposures", "1", "--bands", "r",
            "--seed", "5", "--no-progress", "--out", str(out)]
    assert main(argv) == EXIT_OK
    return out


def _run(night: Path, out: Path, overrides: dict, trace: Path | None = None) -> None:
    raw = next((night / "raw").glob("decam-mini_*.fits.fz"))
    argv = [sys.executable, "-c", "import sys; from cosmodm_ops.cli import main; sys.exit(main(sys.argv[1:]))",
            "single-epoch", "run", "--exposure", str(raw), "--calib", str(night / "calib"),
            "--refcat", str(night / "refcat" / "astrometric.fits"), "--out", str(out), "--jobs", "2",
            "--workdir", str(out.parent / "ram")]
    env = {"COSMODM_CONFIG_OVERRIDES": json.dumps(overrides)}
    proc = subprocess.run(traced_argv(argv, trace) if trace else argv, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=1800, check=False)
    assert proc.returncode == EXIT_OK, proc.stderr[-2000:]


@pytest.fixture(scope="module")
def runs(night: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    need_binary("source-extractor", "psfex", "scamp", "strace")
    base = tmp_path_factory.mktemp("se_cache")
    cache = {"calib_cache_path": str(base / "cache")}
    out = {name: base / name for name in ("off", "cold", "warm")}
    _run(night, out["off"], {"single_epoch": {"calib_cache": False}})
    _run(night, out["cold"], {"single_epoch": cache})
    _run(night, out["warm"], {"single_epoch": cache}, trace=base / "warm.strace")
    yield {**out, "trace": base / "warm.strace", "cache": base / "cache"}
    shutil.rmtree(base / "cache", ignore_errors=True)


def test_products_are_byte_identical_and_catalogs_equal_with_and_without_the_cache(runs: dict[str, Path]):
    m = {name: read_manifest(runs[name] / "manifest.json") for name in ("off", "cold", "warm")}
    assert all(u.state == "ok" for mm in m.values() for u in mm.units)
    sha = {name: {(p.kind, p.path): p.sha256 for p in mm.products if p.kind not in ("catalog", "qa", "thumbnail")}
           for name, mm in m.items()}
    assert {k for k, _ in sha["off"]} >= {"image", "weight", "mask", "psf", "head"}
    assert sha["off"] == sha["cold"] == sha["warm"]
    cats = sorted(p.path for p in m["off"].products if p.kind == "catalog")
    assert len(cats) == 4
    for rel in cats:
        ref = fitsio.read(str(runs["off"] / rel), ext=2)
        for name in ("cold", "warm"):
            got = fitsio.read(str(runs[name] / rel), ext=2)
            assert got.dtype == ref.dtype and len(got) == len(ref) > 0
            for col in ref.dtype.names:
                np.testing.assert_array_equal(got[col], ref[col], err_msg=f"{name} {rel} {col}")
    # the manifests record the same inputs (sha256 from the staging, or from the cache entry)
    assert [(i.role, i.sha256) for i in m["off"].inputs] == [(i.role, i.sha256) for i in m["warm"].inputs]


def test_cold_job_builds_the_entries_and_the_warm_job_reads_no_calibration_file(runs: dict[str, Path]):
    cold = json.loads((runs["cold"] / "manifest.json").read_text())["calib_cache"]
    warm = json.loads((runs["warm"] / "manifest.json").read_text())["calib_cache"]
    off = json.loads((runs["off"] / "manifest.json").read_text())["calib_cache"]
    roles = {"bias", "flat", "starflat", "bpm"}
    assert set(cold["entries"]) == roles and cold["folder"] == str(runs["cache"])
    assert {e["status"] for e in cold["entries"].values()} == {"built"}
    assert all(e["source_bytes_read"] > 0 for e in cold["entries"].values())
    assert {e["status"] for e in warm["entries"].values()} == {"hit"}
    assert {e["key"] for e in warm["entries"].values()} == {e["key"] for e in cold["entries"].values()}
    assert off["enabled"] is False and {e["status"] for e in off["entries"].values()} == {"off"}


def test_warm_job_reads_nothing_of_the_calibration_folder(runs: dict[str, Path], night: Path):
    # syscall tracing: not one byte of the calibration files read by any process of the warm job
    counted = count_strace(runs["trace"], (night / "calib",))
    assert counted.read == 0 and counted.written == 0
    raw_read = count_strace(runs["trace"], (night / "raw",)).read
    assert raw_read > 0  # the trace does see the job's reads of the shared disk
