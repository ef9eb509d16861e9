"""Small job manifests for archive tests: files written in a temporary folder, no pipeline needed."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cosmodm_ops.manifest import JobInfo, Manifest, ManifestInput, ManifestProduct, write_manifest

__all__ = ["sha", "write_bytes", "write_ldac", "make_manifest", "exposure_tags", "SE_KINDS"]

SE_KINDS = ("image", "weight", "mask", "catalog", "psf", "head")


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
