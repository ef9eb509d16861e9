"""The tile coadd, as plain functions: what each task of ``dags/tile_coadd.py`` does.

Folders: each band's job writes ``<work_root>/coadd/<tile>/<band>/`` and the multi-band
calibration ``<work_root>/coadd/<tile>/calibrated/`` (manifest.json, qa.json, products).
The jobs read the archive location from ``COSMODM_DB`` / ``COSMODM_ARCHIVE_ROOT`` in their
environment (never from the command line, where a password could reach a log).
"""

from __future__ import annotations

import os
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cosmodm_ops.config import load_config
from cosmodm_ops.model import validate_token
from cosmodm_ops.workflows.nightly import _site_path, archive_settings, qa_verdict

__all__ = ["TilePlan", "calibration_command", "gate_band", "plan_tile", "register_band", "register_calibration"]


@dataclass
class TilePlan:
    """What one tile_coadd run works on (JSON-able)."""

    tile: str
    bands: list[str]
    survey: str = "demo"
    site: str = "local"
    version: str = "v1"
    jobs: list[dict[str, Any]] = field(default_factory=list)

    def config(self):
        return load_config(self.survey, site=self.site, overrides={"pipeline_version": self.version})

    @property
    def work(self) -> Path:
        root = os.environ.get("COSMODM_WORK_ROOT") or self.config().site.work_root
        return _site_path(root) / "coadd" / self.tile

    def archive(self):
        from cosmodm_ops.archive import Archive

        return Archive(*archive_settings(self.config()))


def plan_tile(params: dict[str, Any], partition_key: str | None) -> dict[str, Any]:
    """Tile and bands from the params, else from the asset partition key ``TILE:BAND``."""
    tile = (params.get("tile") or "").strip()
    bands = list(params.get("bands") or [])
    if not tile and partition_key:
        tile, _, band = partition_key.partition(":")
        bands = bands or ([band] if band else [])
    if not tile:
        msg = "no tile: give the 'tile' param or run from an asset partition 'TILE:BAND'"
        raise ValueError(msg)
    plan = TilePlan(tile=validate_token("tile", tile), bands=[validate_token("band", b) for b in bands],
                    survey=validate_token("survey", params.get("survey") or "demo"),
                    site=validate_token("site", params.get("site") or "local"),
                    version=validate_token("version", params.get("version") or "v1"))
    cfg = plan.config()
    if not plan.bands:
        plan.bands = list(cfg.survey.bands)
    cli = shlex.split(cfg.site.batch.python)
    for band in plan.bands:
        out = plan.work / band
        plan.jobs.append({"band": band, "out": str(out), "command": cli + [
            "coadd", "run", "--tile", plan.tile, "--band", band, "--survey", plan.survey,
            "--version", plan.version, "--out", str(out)]})
    return asdict(plan)


def register_band(plan: dict[str, Any], band: str, out: str, run_info: dict[str, Any] | None) -> dict[str, Any]:
    """Products, lineage and QA of one band's coadd into the archive."""
    p = TilePlan(**plan)
    ids = p.archive().register_manifest(Path(out) / "manifest.json", _run_info(run_info))
    return {"tile": p.tile, "band": band, "out": out, "products": len(ids), "product_ids": list(ids)}


def _run_info(info: dict[str, Any] | None) -> dict[str, Any]:
    info = dict(info or {})
    if "job_id" in info:
        info["batch_job_id"] = str(info.pop("job_id"))
    allowed = {"dag_id", "run_id", "task_id", "try_number", "batch_job_id", "site", "host", "start", "end",
               "state", "exit_code", "bytes_read", "bytes_written"}
    return {k: v for k, v in info.items() if k in allowed and v is not None}


def gate_band(plan: dict[str, Any], band: str, registered: dict[str, Any]) -> dict[str, Any]:
    """QA gate of one band's coadd: accept, or quarantine the (tile, band) with the failed checks."""
    p = TilePlan(**plan)
    passed, reasons, summary = qa_verdict(registered["out"])
    if not passed:
        p.archive().quarantine({"survey": p.survey, "tile": p.tile, "band": band, "version": p.version}, reasons)
    return {"tile": p.tile, "band": band, "accepted": passed, "reasons": reasons, "summary": summary}


def calibration_command(plan: dict[str, Any]) -> list[str] | None:
    """The multi-band calibration command once every band of the tile has an accepted coadd, else None.

    ``COSMODM_PHOTOMETRIC_REFCAT`` (the absolute J anchor) and, for a simulated survey,
    ``COSMODM_TRUTH_CATALOG`` (the simulator's ``truth/objects.fits``, used when the file
    exists) are passed on from the environment of the task.
    """
    p = TilePlan(**plan)
    cfg = p.config()
    archive = p.archive()
    ready = []
    for band in cfg.survey.bands:
        coadds = archive.find(survey=p.survey, tile=p.tile, band=band, kind="coadd", version=p.version)
        if coadds and not archive.is_quarantined({"survey": p.survey, "tile": p.tile, "band": band,
                                                   "version": p.version}):
            ready.append(band)
    wanted = set(p.bands)
    if not wanted <= set(ready) or len(ready) < 2:
        return None
    refcat = os.environ.get("COSMODM_PHOTOMETRIC_REFCAT")
    out = p.work / "calibrated"
    cmd = shlex.split(cfg.site.batch.python) + [
        "coadd", "calibrate", "--tile", p.tile, "--bands", ",".join(ready), "--coadds", str(p.work),
        "--survey", p.survey, "--version", p.version, "--out", str(out)]
    if refcat:
        cmd += ["--refcat", refcat]
    truth = os.environ.get("COSMODM_TRUTH_CATALOG")  # simulations: score completeness and purity
    if truth and Path(truth).is_file():
        cmd += ["--truth", truth]
    return cmd


def register_calibration(plan: dict[str, Any], run_info: dict[str, Any] | None) -> dict[str, Any]:
    """Catalogs and absolute calibration of the tile into the archive, gated on QA."""
    p = TilePlan(**plan)
    out = p.work / "calibrated"
    ids = p.archive().register_manifest(out / "manifest.json", _run_info(run_info))
    passed, reasons, summary = qa_verdict(out)
    if not passed:
        p.archive().quarantine({"survey": p.survey, "tile": p.tile, "version": p.version}, reasons)
    return {"tile": p.tile, "out": str(out), "products": len(ids), "product_ids": list(ids), "accepted": passed,
            "reasons": reasons, "summary": summary}
