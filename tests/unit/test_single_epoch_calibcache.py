"""The per-node calibration cache (single_epoch/calibcache.py) on the tiny raw factory: miss then hit, the
detrend identical with and without it, stale and corrupt entries rebuilt (the bad one quarantined), one build
for concurrent jobs, eviction, the config switch."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from pathlib import Path

import numpy as np
import pytest

from cosmodm_ops.fits import file_sha256
from cosmodm_ops.single_epoch import raw as R
from cosmodm_ops.single_epoch.calibcache import CalibCache, load_calib, stage_calibrations
from cosmodm_ops.single_epoch.inputs import BadInputError
from tests.unit.raw_factory import make_exposure, spec_for

EXTS = ["N1", "N2", "S1", "S2"]


def _calib_inputs(exp) -> list[tuple[str, str]]:
    return R.raw_exposure_plan(exp.raw, exp.calib, exp.cfg)[3]


def test_miss_builds_then_hit_reads_nothing_and_arrays_equal_the_file(tmp_path: Path):
    exp = make_exposure(tmp_path / "exp", seed=2)
    cache = CalibCache(tmp_path / "cache")
    flat = str(exp.calib / "flat_g.fits")
    first = cache.get("flat", flat, ["S2", "N1"])
    assert first.status == "built" and first.bytes_read == Path(flat).stat().st_size
    assert first.sha256 == file_sha256(flat)
    again = cache.get("flat", flat, ["s2"])
    assert (again.status, again.bytes_read, again.key, again.sha256) == ("hit", 0, first.key, first.sha256)
    arr = load_calib(again.folder, "S2")
    assert isinstance(arr, np.memmap) and arr.dtype == np.float32
    np.testing.assert_array_equal(arr, R.read_calib_hdu(flat, "S2", np.float32))
    # a job needing another CCD adds its array, reading only that HDU of the source
    more = cache.get("flat", flat, ["S1"])
    assert more.status == "extended" and 0 < more.bytes_read < Path(flat).stat().st_size
    bpm = cache.get("bpm", str(exp.calib / "bpm.fits"), ["S2"])
    mask = load_calib(bpm.folder, "S2")
    assert mask.dtype == np.uint8
    np.testing.assert_array_equal(mask != 0, R.read_calib_hdu(str(exp.calib / "bpm.fits"), "S2", None) != 0)


def test_detrend_is_identical_with_and_without_the_cache(tmp_path: Path):
    exp = make_exposure(tmp_path / "exp", seed=5)
    cfg = exp.cfg.model_copy(update={"single_epoch": exp.cfg.single_epoch.model_copy(
        update={"calib_cache_path": str(tmp_path / "cache")})})
    cached = stage_calibrations(cfg, _calib_inputs(exp), EXTS)
    assert sorted(cached) == ["bias", "bpm", "flat", "starflat"]
    for ext in EXTS:
        plain = R.ingest_and_detrend(spec_for(exp, ext))
        spec = spec_for(exp, ext)
        spec["calib_cache"] = {role: c.folder for role, c in cached.items()}
        spec["calib_files"] = {role: "/nonexistent/" + Path(p).name for role, p in spec["calib_files"].items()}
        fast = R.ingest_and_detrend(spec)
        for key in ("image", "weight", "mask"):
            np.testing.assert_array_equal(fast[key], plain[key], err_msg=f"{ext} {key}")
        assert fast["header"].tostring() == plain["header"].tostring()


def test_corrupt_and_stale_entries_are_moved_aside_and_rebuilt(tmp_path: Path):
    exp = make_exposure(tmp_path / "exp", seed=2)
    cache = CalibCache(tmp_path / "cache")
    bias = exp.calib / "bias.fits"
    entry = cache.get("bias", str(bias), EXTS)
    npy = Path(entry.folder) / "S1.npy"
    data = bytearray(npy.read_bytes())
    data[-8:] = b"\x00\x00\xc0\x7f" * 2  # two NaN pixels, same size
    npy.write_bytes(bytes(data))
    redo = cache.get("bias", str(bias), ["S1"])
    assert redo.status == "rebuilt" and redo.key == entry.key
    np.testing.assert_array_equal(load_calib(redo.folder, "S1"), R.read_calib_hdu(str(bias), "S1", np.float32))
    quarantined = list((tmp_path / "cache" / "quarantine").iterdir())
    assert len(quarantined) == 1 and (quarantined[0] / "S1.npy").read_bytes() == bytes(data)
    # a truncated array is corrupt too
    (Path(redo.folder) / "S1.npy").write_bytes(bytes(data[:200]))
    assert cache.get("bias", str(bias), ["S1"]).status == "rebuilt"
    # a rewritten source is another key: a new entry, the old one evicted later
    st = bias.stat()
    os.utime(bias, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    new = cache.get("bias", str(bias), ["S1"])
    assert new.status == "built" and new.key != entry.key
    # a meta.json whose recorded identity differs (e.g. copied from another node) is stale
    meta_path = Path(new.folder) / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["source"]["size"] += 1
    meta_path.write_text(json.dumps(meta))
    assert cache.get("bias", str(bias), ["S1"]).status == "rebuilt"


def _get_status(args: tuple[str, str]) -> str:
    folder, path = args
    return CalibCache(folder).get("flat", path, EXTS).status


def test_concurrent_jobs_build_an_entry_once(tmp_path: Path):
    exp = make_exposure(tmp_path / "exp", seed=2)
    ctx = mp.get_context("fork")
    with ctx.Pool(3) as pool:
        statuses = pool.map(_get_status, [(str(tmp_path / "cache"), str(exp.calib / "flat_g.fits"))] * 3)
    assert sorted(statuses) == ["built", "hit", "hit"]
    assert [p.name for p in (tmp_path / "cache").iterdir() if p.is_dir()] == [
        CalibCache(tmp_path / "cache").get("flat", str(exp.calib / "flat_g.fits"), []).key]


def test_eviction_removes_old_entries_of_other_keys_and_keeps_a_size_cap(tmp_path: Path):
    exp = make_exposure(tmp_path / "exp", seed=2)
    cache = CalibCache(tmp_path / "cache", max_age_days=1.0)
    a = cache.get("bias", str(exp.calib / "bias.fits"), EXTS)
    b = cache.get("flat", str(exp.calib / "flat_g.fits"), EXTS)
    old = time.time() - 3 * 86400
    os.utime(Path(a.folder) / ".used", (old, old))
    os.utime(Path(b.folder) / ".used", (old, old))
    assert cache.evict(keep={b.key}) == [a.key]  # the job's own entry stays, however old
    assert not Path(a.folder).exists() and Path(b.folder).exists()
    capped = CalibCache(tmp_path / "cache", max_gb=1e-9)
    c = capped.get("starflat", str(exp.calib / "starflat_g.fits"), EXTS)
    assert capped.evict(keep={c.key}) == [b.key]
    assert capped.get("starflat", str(exp.calib / "starflat_g.fits"), EXTS).status == "hit"


def test_eviction_removes_entries_whose_source_is_gone_or_changed_at_once(tmp_path: Path):
    exp = make_exposure(tmp_path / "exp", seed=2)
    cache = CalibCache(tmp_path / "cache")  # 2 days, 12 GB: no age or size rule applies
    bias = exp.calib / "bias.fits"
    a = cache.get("bias", str(bias), EXTS)
    b = cache.get("flat", str(exp.calib / "flat_g.fits"), EXTS)
    c = cache.get("starflat", str(exp.calib / "starflat_g.fits"), EXTS)
    assert cache.evict() == []  # every source as it was
    st = bias.stat()
    os.utime(bias, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # rewritten: its old key can never be hit
    (exp.calib / "flat_g.fits").unlink()  # a test's temp folder, or a retired calibration
    assert sorted(cache.evict()) == sorted([a.key, b.key])
    assert not Path(a.folder).exists() and not Path(b.folder).exists() and Path(c.folder).exists()
    assert cache.get("starflat", str(exp.calib / "starflat_g.fits"), EXTS).status == "hit"


def test_cache_off_stages_nothing(tmp_path: Path):
    exp = make_exposure(tmp_path / "exp", seed=2)
    se = exp.cfg.single_epoch.model_copy(update={"calib_cache": False, "calib_cache_path": str(tmp_path / "c")})
    assert stage_calibrations(exp.cfg.model_copy(update={"single_epoch": se}), _calib_inputs(exp), EXTS) == {}
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("fraction", [1e-9])
def test_a_build_that_would_fill_the_ram_disk_falls_back_to_the_file(tmp_path: Path, fraction: float,
                                                                      caplog: pytest.LogCaptureFixture):
    exp = make_exposure(tmp_path / "exp", seed=2)
    site = exp.cfg.site.model_copy(update={"ramdisk": exp.cfg.site.ramdisk.model_copy(
        update={"max_fraction": fraction})})
    se = exp.cfg.single_epoch.model_copy(update={"calib_cache_path": str(tmp_path / "c")})
    cfg = exp.cfg.model_copy(update={"single_epoch": se, "site": site})
    assert stage_calibrations(cfg, _calib_inputs(exp), EXTS) == {}
    assert "read without the cache" in caplog.text
    assert [p.name for p in (tmp_path / "c").iterdir() if p.is_dir()] == []


def test_a_calibration_of_the_wrong_shape_is_bad_input_before_any_build(tmp_path: Path):
    exp = make_exposure(tmp_path / "exp", seed=2)
    se = exp.cfg.single_epoch.model_copy(update={"calib_cache_path": str(tmp_path / "c")})
    cam = exp.cfg.camera.model_copy(update={"ccd_nx": 64})
    cfg = exp.cfg.model_copy(update={"single_epoch": se, "camera": cam})
    with pytest.raises(BadInputError, match=r"bias.fits HDU 1 \(S1\).*expected the trimmed shape \(160, 64\)"):
        stage_calibrations(cfg, _calib_inputs(exp), EXTS)
    assert [p.name for p in (tmp_path / "c").iterdir() if p.is_dir()] == []


def test_eviction_removes_old_lock_files_of_entries_never_built(tmp_path: Path):
    cache = CalibCache(tmp_path / "cache", max_age_days=1.0)
    (tmp_path / "cache").mkdir()
    lock = tmp_path / "cache" / "bias.fits-0123.lock"
    lock.touch()
    cache.evict()
    assert lock.exists()  # recent: a job may be about to build
    old = time.time() - 3 * 86400
    os.utime(lock, (old, old))
    cache.evict()
    assert not lock.exists()
