"""Small job manifests for archive tests: files written in a temporary folder, no pipeline needed."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cosmodm_ops.manifest import JobInfo, Manifest, ManifestInput, ManifestProduct, write_manifest
from cosmodm_ops.model import Tags
from tests.support import REPO

__all__ = [
    "REAL_CAT",
    "SE_KINDS",
    "build_night",
    "calib",
    "exposure_tags",
    "make_manifest",
    "run_workers",
    "se_manifest",
    "sha",
    "write_bytes",
    "write_ldac",
]

SE_KINDS = ("image", "weight", "mask", "catalog", "psf", "head")
REAL_CAT = "piff/DECam_00241238_01_cat.fits"


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_bytes(path: Path, content: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def write_ldac(path: Path, ra: np.ndarray, dec: np.ndarray, mag: np.ndarray | None = None) -> Path:
    """A minimal FITS_LDAC catalog (empty primary, LDAC_IMHEAD, LDAC_OBJECTS)."""
    import fitsio

    n = len(ra)
    mag = np.linspace(18, 24, n) if mag is None else mag
    data = np.zeros(n, dtype=[("NUMBER", "i4"), ("ALPHAWIN_J2000", "f8"), ("DELTAWIN_J2000", "f8"),
                              ("MAG_AUTO", "f4"), ("MAGERR_AUTO", "f4"), ("MAG_PSF", "f4"),
                              ("SPREAD_MODEL", "f4"), ("FLAGS", "i2")])
    data["NUMBER"] = np.arange(1, n + 1)
    data["ALPHAWIN_J2000"], data["DELTAWIN_J2000"], data["MAG_AUTO"] = ra, dec, mag
    data["MAGERR_AUTO"], data["MAG_PSF"], data["SPREAD_MODEL"] = 0.01, mag + 0.02, 0.001
    path.parent.mkdir(parents=True, exist_ok=True)
    with fitsio.FITS(str(path), "rw", clobber=True) as f:
        f.write(np.zeros(1, dtype=[("Field Header Card", "S80", (2,))]), extname="LDAC_IMHEAD")
        f.write(data, extname="LDAC_OBJECTS")
    return path


def exposure_tags(expnum: int, *, kind: str, ccd: int | None = None, survey: str = "demo",
                  camera: str = "decam", night: str = "2024-01-05", band: str = "r", version: str = "v1",
                  stage: str = "single_epoch") -> dict[str, Any]:
    return {"survey": survey, "camera": camera, "stage": stage, "version": version, "kind": kind,
            "night": night, "expnum": expnum, "ccd": ccd, "band": band, "tile": None}


def make_manifest(
    folder: Path,
    *,
    products: Sequence[tuple[dict[str, Any], bytes | Path]],
    inputs: Sequence[tuple[str, Path]] = (),
    product_inputs: dict[int, list[str]] | None = None,
    qa: dict[str, Any] | None = None,
    job: dict[str, Any] | None = None,
) -> Path:
    """Write product files and ``manifest.json`` (and ``qa.json``) into ``folder``.

    Parameters
    ----------
    products : (tags, content) pairs
        ``content`` is bytes to write, or a file to copy (e.g. an LDAC catalog).
    inputs : (role, path) pairs
        Job inputs (files that exist; their sha256 is computed).
    product_inputs : {index: [role or product path]}
        The ``inputs`` subset of some products.
    """
    folder.mkdir(parents=True, exist_ok=True)
    prods = []
    for i, (tags, content) in enumerate(products):
        suffix = ".fits" if tags["kind"] in ("catalog", "coadd_catalog") else ".dat"
        rel = f"out/p{i:03d}_{tags['kind']}{suffix}"
        dest = folder / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Path):
            shutil.copyfile(content, dest)
        else:
            dest.write_bytes(content)
        prods.append(ManifestProduct(kind=tags["kind"], tags=tags, path=rel, sha256=sha(dest),
                                     size=dest.stat().st_size,
                                     inputs=(product_inputs or {}).get(i)))
    ins = [ManifestInput(role=role, path=str(p), sha256=sha(p), size=Path(p).stat().st_size) for role, p in inputs]
    m = Manifest(job=JobInfo(**(job or {"name": "test-job", "site": "local", "host": "node1",
                                        "start": "2024-01-06T00:00:00+00:00", "end": "2024-01-06T00:01:00+00:00"})),
                 products=prods, inputs=ins, versions={"cosmodm_ops": "0.test"}, config_hash="cfg123",
                 bytes={"output": sum(p.size for p in prods)})
    if qa is not None:
        (folder / "qa.json").write_text(json.dumps(qa))
    return write_manifest(m, folder / "manifest.json")


def calib(arch: Any, tmp_path: Path, kind: str, content: bytes, band: str | None = "r") -> int:
    f = write_bytes(tmp_path / "calib_src" / f"{kind}_{hashlib.sha256(content).hexdigest()[:12]}", content)
    tags = Tags(survey="demo", camera="decam", stage="calib", version="v1", kind=kind, band=band)
    return arch.store(f, tags).id


def se_manifest(tmp_path: Path, expnum: int, inputs, ccds=(1, 2), catalogs=None, qa=None, salt=b"") -> Path:
    products, sub = [], {}
    for ccd in ccds:
        for kind in SE_KINDS:
            tags = exposure_tags(expnum, kind=kind, ccd=ccd)
            if kind == "catalog":
                content = catalogs[ccd] if catalogs else write_ldac(
                    tmp_path / f"cat_{expnum}_{ccd}.fits", np.array([10.0 + ccd]), np.array([-20.0 - expnum % 7]))
                sub[len(products)] = [f"out/p{len(products) - 3:03d}_image.dat"]  # catalog <- image only
            else:
                content = f"{expnum}/{ccd}/{kind}".encode() + salt
            products.append((tags, content))
    return make_manifest(tmp_path / f"job_{expnum}", products=products, inputs=inputs, product_inputs=sub, qa=qa)


def build_night(archive, tmp_path: Path) -> dict[str, Any]:
    """Raws, a bias and a flat registered; two exposures processed; one coadd made of their images."""
    raw_ids, raws = {}, {}
    for expnum in (1001, 1002):
        raw = write_bytes(tmp_path / "incoming" / f"raw_{expnum}.fits.fz", f"raw {expnum}".encode())
        raws[expnum] = raw
        raw_ids[expnum] = archive.register_raw(raw, exposure_tags(expnum, kind="raw", stage="raw"),
                                               header={"EXPTIME": 90.0})
    bias_id = calib(archive, tmp_path, "bias", b"bias v1", band=None)
    flat_id = calib(archive, tmp_path, "flat", b"flat v1")
    bias = archive.root / archive.product(bias_id)["path"]
    flat = archive.root / archive.product(flat_id)["path"]
    se = {}
    for expnum in (1001, 1002):
        m = se_manifest(tmp_path, expnum, [("raw", raws[expnum]), ("bias", bias), ("flat", flat)],
                         qa={"checks": [{"name": "fwhm", "value": 1.1, "threshold": 2.0, "verdict": "pass"}],
                             "ccds": {"1": {"checks": [{"name": "nstars", "value": 50, "threshold": 20,
                                                        "verdict": "pass"}]}}})
        se[expnum] = archive.register_manifest(m, run_info={"dag_id": "nightly_ingest", "run_id": "r1",
                                                            "task_id": "register", "try_number": 1,
                                                            "batch_job_id": f"slurm-{expnum}"})
    images = archive.find(kind="image")
    coadd_tags = {"survey": "demo", "camera": "decam", "stage": "coadd", "version": "v1", "tile": "T0001",
                  "band": "r"}
    cm = make_manifest(
        tmp_path / "coadd_job",
        products=[({**coadd_tags, "kind": "coadd"}, b"coadd pixels"),
                  ({**coadd_tags, "kind": "coadd_catalog"},
                   write_ldac(tmp_path / "coadd_cat.fits", np.array([10.5, 10.6]), np.array([-20.5, -20.6])))],
        inputs=[("image", archive.root / r["path"]) for r in images],
        product_inputs={1: ["out/p000_coadd.dat"]},
    )
    coadd_ids = archive.register_manifest(cm)
    return {"raw": raw_ids, "bias": bias_id, "flat": flat_id, "se": se, "coadd": coadd_ids[0],
            "coadd_cat": coadd_ids[1], "flat_path": flat, "coadd_manifest": cm}


_WORKER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from cosmodm_ops.archive import Archive
    db, root, go, what, arg = sys.argv[1:6]
    while not Path(go).exists():
        time.sleep(0.005)
    arch = Archive(db, root)
    if what == "manifest":
        print(arch.register_manifest(arg))
    else:
        from cosmodm_ops.model import Tags
        tags = Tags(survey="demo", camera="decam", stage="calib", version="v1", kind="flat", band="g")
        print(arch.store(arg, tags).id)
""")


def run_workers(archive: Any, tmp_path: Path, jobs: list[tuple[str, Any]], script: str = _WORKER) -> list[str]:
    """Start one process per job, release them at once, return their stdout (asserting exit 0).

    ``script`` reads ``db, root, go, what, arg`` from ``sys.argv[1:6]`` and waits for the file ``go``.
    """
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", script, archive.db_url, str(archive.root), str(go), what, str(arg)],
                              env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for what, arg in jobs]
    time.sleep(1.5)  # every worker imported and waiting
    go.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    for p, (_out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
    return [o for o, _ in outs]
