"""CPU attribution (own code vs the Astromatic tools) and RAM-disk byte accounting of the single-epoch run,
on a two-CCD exposure made of the real DECam CP cutout (N2 of exposure 630780) twice, run with two workers."""

from __future__ import annotations

import resource
import shutil
from pathlib import Path

import fitsio
import numpy as np
import pytest
from astropy.io import fits as afits

from cosmodm_ops import fits as cfits
from cosmodm_ops.astromatic import ToolError, run_tool, sextractor_args
from cosmodm_ops.cli import EXIT_OK, main
from cosmodm_ops.manifest import read_manifest
from cosmodm_ops.single_epoch.accounting import StageClock, tree_cpu
from tests.support import need_binary, real_file

pytestmark = pytest.mark.astromatic

STEM = "legacypipe/c4d_170316_062107_{}_z_ls9.N2.fits"


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _args(image: Path, tmp_path: Path) -> list[str]:
    flag = image.with_name("flag.fits")
    return sextractor_args(image, tmp_path / "c.ldac", flag=flag, pixel_scale=0.263, saturate=6e4)


@pytest.fixture(scope="module")
def cutout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real cutout as a plain single-HDU image (what SExtractor reads)."""
    need_binary("source-extractor")
    out = tmp_path_factory.mktemp("cutout") / "n2.fits"
    data = fitsio.read(str(real_file(STEM.format("ooi"))), ext=1)
    fitsio.write(str(out), data, clobber=True)
    fitsio.write(str(out.with_name("flag.fits")), np.zeros(data.shape, np.int32), clobber=True)
    return out


def test_run_tool_reports_the_tools_own_cpu(cutout: Path, tmp_path: Path):
    before = _children_cpu()
    res = run_tool("sextractor", _args(cutout, tmp_path), cwd=tmp_path)
    after = _children_cpu()
    assert (tmp_path / "c.ldac").stat().st_size > 0
    assert res.cpu_s > 0
    # reaped by wait4, the tool's usage lands in this process's RUSAGE_CHILDREN: the same seconds, nothing else
    assert after - before == pytest.approx(res.cpu_s, abs=2e-3)


def test_stage_clock_keeps_tool_cpu_apart_from_ours(cutout: Path, tmp_path: Path):
    clock = StageClock()
    res = clock.tool("pass1", "sextractor", _args(cutout, tmp_path),
                     cwd=tmp_path)
    with clock.stage("ours"):
        sum(i * i for i in range(200_000))
    rec = clock.record()
    assert rec["tool_cpu"] == {"sextractor": res.cpu_s}
    assert set(rec["own_cpu"]) == {"pass1", "ours", "other"}
    assert set(rec["timings"]) == {"pass1", "ours"}
    # while the tool runs this process waits in wait4: its own CPU in that stage is not the tool's
    assert rec["own_cpu"]["pass1"] < res.cpu_s
    assert rec["own_cpu"]["ours"] > 0


def test_run_tool_timeout_kills_and_names_the_tool(cutout: Path, tmp_path: Path):
    with pytest.raises(ToolError, match="source-extractor timed out"):
        run_tool("sextractor", _args(cutout, tmp_path), cwd=tmp_path, timeout=0.001)


@pytest.fixture(scope="module")
def two_ccd_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A two-CCD detrended exposure (the cutout as CCDs 33 and 34) through `single-epoch run --jobs 2`, with the
    RAM-disk folder kept (cleanup patched out) so its bytes can be counted independently."""
    need_binary("source-extractor", "psfex", "scamp")
    tmp = tmp_path_factory.mktemp("se_acct")
    files = {}
    for kind in ("ooi", "oow", "ood"):
        src = real_file(STEM.format(kind))
        with afits.open(src) as h:
            hdus = [afits.PrimaryHDU(header=h[0].header)]
            for ccdnum, name in ((33, "N2"), (34, "N3")):
                ext = afits.ImageHDU(h[1].data, header=h[1].header.copy(), name=name)
                ext.header["CCDNUM"] = ccdnum
                hdus.append(ext)
            afits.HDUList(hdus).writeto(tmp / f"{kind}.fits")
        files[kind] = tmp / f"{kind}.fits"
    ram = Path("/dev/shm") / f"cosmodm-acct-{tmp.name}"  # a RAM disk, as in production
    keep = pytest.MonkeyPatch()
    keep.setattr(cfits.Staging, "cleanup", lambda self: None)
    try:
        c0 = tree_cpu()
        code = main(["single-epoch", "run", "--detrended", str(files["ooi"]), "--weight", str(files["oow"]),
                     "--mask", str(files["ood"]), "--refcat", str(real_file("legacypipe/chunk-03586.fits")),
                     "--out", str(tmp / "run"), "--jobs", "2", "--workdir", str(ram)])
        cpu_around = tree_cpu() - c0
    finally:
        keep.undo()
    assert code == EXIT_OK
    (work,) = ram.iterdir()
    on_ramdisk = sum(f.stat().st_size for f in work.rglob("*") if f.is_file())
    names = sorted(f.name for f in work.iterdir())
    shutil.rmtree(ram)
    return {"manifest": read_manifest(tmp / "run" / "manifest.json"), "cpu_around": cpu_around,
            "on_ramdisk": on_ramdisk, "names": names, "out": tmp / "run"}


def test_manifest_cpu_block_splits_own_code_from_the_tools(two_ccd_run: dict):
    m = two_ccd_run["manifest"]
    assert [u.state for u in m.units] == ["ok", "ok"]
    cpu = m.cpu
    assert cpu["sextractor_s"] > 0 and cpu["psfex_s"] > 0
    assert cpu["scamp_s"] == 0  # too few reference stars in a cutout: SCAMP is not run
    assert cpu["astromatic_s"] == pytest.approx(cpu["sextractor_s"] + cpu["psfex_s"] + cpu["scamp_s"], abs=2e-3)
    assert cpu["own_s"] > 0
    assert cpu["total_s"] == pytest.approx(cpu["own_s"] + cpu["astromatic_s"], abs=2e-3)
    # own_share is computed before the seconds are rounded to ms: allow for that rounding
    assert cpu["own_share"] == pytest.approx(cpu["own_s"] / cpu["total_s"], abs=2e-3 / cpu["total_s"] + 1e-3)
    # the total is the process tree's (the two workers and their tools included), measured inside the run
    assert 0 < cpu["total_s"] <= two_ccd_run["cpu_around"] + 1e-3
    # per-CCD stages of both workers arrive, each stage's own CPU at most the total own CPU
    stages = cpu["own_stages"]
    assert {"read_detrend", "write_work", "qa_measure", "write_products", "stage", "checksums"} <= set(stages)
    assert sum(stages.values()) == pytest.approx(cpu["own_s"], abs=5e-3)
    assert m.timings["sextractor_pass1"] > 0 and m.timings["sextractor_pass2"] > 0


def test_ramdisk_bytes_count_every_file_of_the_work_folder(two_ccd_run: dict):
    m = two_ccd_run["manifest"]
    assert m.bytes["ramdisk"] == two_ccd_run["on_ramdisk"]
    names = two_ccd_run["names"]
    for tag in ("ccd33", "ccd34"):
        assert {f"{tag}.fits", f"{tag}.weight.fits", f"{tag}.flag.fits", f"{tag}.pass1.ldac",
                f"{tag}.pass1.psf", f"{tag}.cat.ldac"} <= set(names)
    assert "refcat.npz" in names
    out = two_ccd_run["out"]
    assert m.bytes["output"] == sum((out / p.path).stat().st_size for p in m.products)
