"""What an exposure run leaves in its output folder: products with checksums, CCD states, the manifest.

* :func:`carry_over`: the CCDs an earlier run of the same config finished and whose products are
  intact (a re-run does not redo them).
* :class:`CcdOutcomes` and :func:`collect_ccd_results`: the workers' results turned into unit
  states, QA values and manifest products (sha256 and size of every file).
* :func:`build_manifest`: the job's ``manifest.json`` content (products, inputs, versions, config
  hash, timings, bytes, CPU, units).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cosmodm_ops import fits as cfits
from cosmodm_ops.common import utc_now
from cosmodm_ops.config import Config
from cosmodm_ops.manifest import Manifest, ManifestInput, ManifestProduct, UnitStatus, read_manifest
from cosmodm_ops.model import ProductKind, Stage, Tags
from cosmodm_ops.single_epoch.accounting import StageClock
from cosmodm_ops.single_epoch.inputs import ExposureInfo

__all__ = [
    "CcdOutcomes",
    "build_manifest",
    "carry_over",
    "collect_ccd_results",
    "input_records",
    "product",
    "product_tags",
    "publish",
    "tree_bytes",
]


def product_tags(cfg: Config, info: ExposureInfo, kind: str, ccd: int | None) -> dict[str, Any]:
    """Identification tags of one single-epoch product (``ccd`` None for exposure-level products)."""
    return Tags(survey=cfg.survey.name, camera=info.camera, stage=Stage.SINGLE_EPOCH, version=cfg.pipeline_version,
                kind=ProductKind(kind), night=info.night, expnum=info.expnum, ccd=ccd, band=info.band).to_dict()


def product(path: Path, outdir: Path, kind: str, tags: dict[str, Any], sha256: str | None = None) -> ManifestProduct:
    """The manifest entry of a product file (path relative to ``outdir``, sha256 -- read from the file unless
    given --, size)."""
    return ManifestProduct(kind=kind, tags=tags, path=str(path.relative_to(outdir)),
                           sha256=sha256 or cfits.file_sha256(path), size=path.stat().st_size)


def publish(src: Path, dst: Path) -> str:
    """Copy a product made in the RAM disk into the output folder (a temporary name, fsync, rename: no
    half-written product), hashing it on the way; its sha256. The output file system is only written."""
    h = hashlib.sha256()
    tmp = dst.with_name(f".{dst.name}.part")
    try:
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            while block := fin.read(1 << 22):
                h.update(block)
                fout.write(block)
            fout.flush()
            os.fsync(fout.fileno())
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return h.hexdigest()


def carry_over(outdir: Path, chash: str) -> tuple[dict[int, list[ManifestProduct]], dict[int, dict[str, Any]]]:
    """Products and QA entries of CCDs that an earlier run of the same config finished and that are intact."""
    mpath, qpath = outdir / "manifest.json", outdir / "qa.json"
    if not mpath.exists() or not qpath.exists():
        return {}, {}
    try:
        old = read_manifest(mpath)
        qa = json.loads(qpath.read_text())
    except (ValueError, OSError):
        return {}, {}
    if old.config_hash != chash:
        return {}, {}
    ok_ccds = {u.ccd for u in old.units if u.state == "ok" and u.ccd is not None}
    products: dict[int, list[ManifestProduct]] = {}
    for p in old.products:
        ccd = p.tags.get("ccd")
        if ccd in ok_ccds:
            products.setdefault(ccd, []).append(p)
    good: dict[int, list[ManifestProduct]] = {}
    for ccd, plist in products.items():
        if all((outdir / p.path).exists() and cfits.file_sha256(outdir / p.path) == p.sha256 for p in plist):
            good[ccd] = plist
    entries = {e["ccd"]: e for e in qa.get("ccds", []) if e.get("ccd") in good}
    return {c: good[c] for c in entries}, entries


@dataclass
class CcdOutcomes:
    """Per-CCD outcomes of a run: unit states, QA values of the measured CCDs, qa.json entries of the failed
    ones, and the manifest products (carried-over CCDs first, in file order)."""

    units: dict[int, UnitStatus] = field(default_factory=dict)
    values: dict[int, dict[str, Any]] = field(default_factory=dict)
    failed: dict[int, dict[str, Any]] = field(default_factory=dict)
    products: list[ManifestProduct] = field(default_factory=list)
    #: CCDNUM -> the CCD binned for the exposure preview by its worker
    previews: dict[int, Any] = field(default_factory=dict)

    def carried(self, ccd: int, products: list[ManifestProduct]) -> None:
        """A CCD whose products an earlier run made (skipped)."""
        self.units[ccd] = UnitStatus(ccd=ccd, state="skipped", reason="outputs of an earlier run match the manifest")
        self.products += products

    def fail(self, ccd: int, reason: str) -> None:
        """A CCD that failed (its reason goes into the manifest's units and qa.json)."""
        self.units[ccd] = UnitStatus(ccd=ccd, state="failed", reason=reason)
        self.failed[ccd] = {"ccd": ccd, "state": "failed", "reason": reason, "checks": []}

    @property
    def n_failed(self) -> int:
        """Number of failed CCDs."""
        return sum(1 for u in self.units.values() if u.state == "failed")


def collect_ccd_results(out: CcdOutcomes, preps: list[dict[str, Any]], results: list[dict[str, Any]], *,
                        outdir: Path, cfg: Config, info: ExposureInfo, clock: StageClock,
                        records: list[dict[str, Any]]) -> None:
    """Fold phase A's failures and phase B's results into ``out``; the workers' clock records into ``records``."""
    for p in preps:
        if "failed" in p:
            out.fail(p["ccd"], p["failed"])
    for r in results:
        records.append(r.pop("clock", {}))
        if "failed" in r:
            out.fail(r["ccd"], r["failed"])
            continue
        out.units[r["ccd"]] = UnitStatus(ccd=r["ccd"], state="ok")
        out.values[r["ccd"]] = r["values"]
        with clock.stage("checksums"):
            for kind, path, sha in r["products"]:
                out.products.append(product(Path(path), outdir, kind, product_tags(cfg, info, kind, r["ccd"]), sha))
        if r.get("preview") is not None:
            out.previews[r["ccd"]] = r["preview"]


def input_records(inputs: list[tuple[str, str]], known: dict[str, str] | None = None) -> list[ManifestInput]:
    """The manifest's inputs: absolute path, sha256 and size of every (role, path); ``known``: role -> sha256
    computed while staging (those files are not read again)."""
    known = known or {}
    return [ManifestInput(role=role, path=str(Path(path).resolve()),
                          sha256=known.get(role) or cfits.file_sha256(path), size=Path(path).stat().st_size)
            for role, path in inputs]


def build_manifest(*, cfg: Config, info: ExposureInfo, out: CcdOutcomes, inputs: list[ManifestInput],
                   versions: dict[str, str], chash: str, start_iso: str, timings: dict[str, float],
                   ramdisk_bytes: int, cpu: dict[str, Any]) -> Manifest:
    """The job's manifest (state ``partial`` when some CCD failed; exit code 3 then, else 0).

    ``versions`` (:func:`cosmodm_ops.common.versions`) is read by the caller before the process tree's
    CPU, so that the tool-version probes are counted in ``cpu``.
    """
    n_failed = out.n_failed
    return Manifest(
        job={"name": f"single-epoch-{info.expnum}", "site": cfg.site.name, "host": socket.gethostname(),
             "start": start_iso, "end": utc_now(),
             "state": "partial" if n_failed else "done", "exit_code": 3 if n_failed else 0},
        tags={"survey": cfg.survey.name, "camera": info.camera, "stage": "single_epoch",
              "version": cfg.pipeline_version, "night": info.night, "expnum": info.expnum, "band": info.band},
        products=out.products,
        inputs=inputs,
        versions=versions,
        config_hash=chash,
        timings={k: round(v, 4) for k, v in timings.items()},
        bytes={"ramdisk": int(ramdisk_bytes), "output": int(sum(p.size for p in out.products))},
        cpu=cpu,
        units=[out.units[c] for c in sorted(out.units)],
    )


def tree_bytes(folder: Path) -> int:
    """Total size of the files under ``folder``."""
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
