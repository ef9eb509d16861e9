"""The nightly ingestion, as plain functions: what each task of ``dags/nightly_ingest.py`` does.

No Airflow import here: the DAG file wires these functions into tasks, and the Airflow
layer translates their outcomes (a quarantine verdict becomes a skipped task with a
note). Every function is idempotent: running it twice for a night changes nothing.

Folders (site config): a night's input arrives in ``<site.raw_source>/<night>/`` with
``raw/*.fits.fz``, ``calib/`` and ``refcat/`` (the layout of ``cosmodm sim night``);
it is transferred to ``<site.work_root>/<night>/input/`` and each exposure's job writes
``<site.work_root>/<night>/<expnum>/`` (manifest.json, qa.json, products).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cosmodm_ops.config import Config, load_config
from cosmodm_ops.model import validate_night, validate_token

__all__ = [
    "NightPlan",
    "ExposureRef",
    "resolve_night",
    "archive_settings",
    "discover_exposures",
    "plan_jobs",
    "qa_verdict",
    "transfer_items",
]

log = logging.getLogger(__name__)


@dataclass
class NightPlan:
    """What one run of the nightly DAG works on (JSON-able: travels by XCom)."""

    night: str
    survey: str
    site: str
    version: str
    force: bool = False

    def config(self) -> Config:
        """The merged configuration (loaded when a task runs, never at DAG parse)."""
        return load_config(self.survey, site=self.site, overrides={"pipeline_version": self.version})

    @property
    def source(self) -> Path:
        """Where the night's input arrives."""
        return Path(self.config().site.raw_source) / self.night

    @property
    def work(self) -> Path:
        """The night's working folder on the site."""
        return Path(self.config().site.work_root) / self.night


@dataclass
class ExposureRef:
    """One raw exposure found for a night."""

    expnum: int
    band: str
    path: str
    sha256: str
    size: int
    problem: str | None = None
    header: dict[str, Any] = field(default_factory=dict)


def resolve_night(
    params: dict[str, Any], data_interval_start: dt.datetime | None, run_after: dt.datetime | None = None
) -> NightPlan:
    """The night of a run: the ``night`` param if given, else the date of the data interval's start.

    The data interval of the nightly schedule is the night itself (noon to noon UTC), so its
    start date names the night; a manual run without a night takes the day before ``run_after``.
    """
    night = (params.get("night") or "").strip()
    if not night:
        if data_interval_start is not None:
            night = data_interval_start.date().isoformat()
        elif run_after is not None:
            night = (run_after.date() - dt.timedelta(days=1)).isoformat()
        else:
            msg = "no night given and no data interval: pass the 'night' param as YYYY-MM-DD"
            raise ValueError(msg)
    site = validate_token("site", params.get("site") or "local")
    survey = validate_token("survey", params.get("survey") or "demo")
    plan = NightPlan(night=validate_night(night), survey=survey, site=site,
                     version=validate_token("version", params.get("version") or "v1"),
                     force=bool(params.get("force", False)))
    plan.config()  # fail early, with the file and key, on a broken config
    return plan


def archive_settings(cfg: Config) -> tuple[str, str]:
    """(db_url, root) of the archive: ``COSMODM_DB`` / ``COSMODM_ARCHIVE_ROOT`` override the site."""
    return (os.environ.get("COSMODM_DB") or cfg.site.archive.db_url,
            os.environ.get("COSMODM_ARCHIVE_ROOT") or cfg.site.archive.root)


def _check_raw(path: Path) -> tuple[dict[str, Any], str | None]:
    """Open every HDU header and the last HDU's data: catches truncated and non-FITS files cheaply."""
    import fitsio

    try:
        with fitsio.FITS(str(path)) as fits:
            primary = fits[0].read_header()
            n = len(fits)
            if n < 2:
                return {}, f"{path.name}: has {n} HDU(s); a raw exposure has one per CCD"
            for key in ("EXPNUM", "FILTER", "EXPTIME"):
                if key not in primary:
                    return {}, f"{path.name}[0]: header key {key} is missing"
            last = fits[n - 1]
            last.read()  # a truncated file fails here
            band = str(primary.get("BAND") or str(primary["FILTER"]).split()[0]).strip()
            return {"EXPNUM": int(primary["EXPNUM"]), "BAND": band, "NCCD": n - 1}, None
    except (OSError, ValueError) as err:
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        return {}, f"{path.name}: unreadable or truncated FITS ({reason[:200]})"


def discover_exposures(plan: NightPlan) -> list[ExposureRef]:
    """The raw exposures of a night, each checked; a bad file carries its ``problem`` (never raises).

    Returns an empty list for a night with no data.
    """
    from cosmodm_ops.fits import file_sha256

    raw_dir = plan.source / "raw"
    if not raw_dir.is_dir():
        log.info("night %s: no raw folder %s: nothing to do", plan.night, raw_dir)
        return []
    found = []
    for i, path in enumerate(sorted(raw_dir.glob("*.fits*"))):
        header, problem = _check_raw(path)
        expnum = header.get("EXPNUM")
        if expnum is None:  # unknown number: derive a stable one from the name for the record
            digits = "".join(c for c in path.name.split(".")[0].rsplit("_", 1)[-1] if c.isdigit())
            expnum = int(digits) if digits else 90_000_000 + i
        found.append(ExposureRef(
            expnum=int(expnum), band=str(header.get("BAND", "unknown")), path=str(path),
            sha256=file_sha256(path), size=path.stat().st_size, problem=problem, header=header,
        ))
    log.info("night %s: %d exposure(s), %d with problems", plan.night, len(found),
             sum(1 for e in found if e.problem))
    return found


def transfer_items(plan: NightPlan) -> list[dict[str, str]]:
    """(src, dst) pairs that bring a night's input to the site: raw files, calibrations, reference catalogs."""
    items = []
    for sub in ("raw", "calib", "refcat"):
        src = plan.source / sub
        if src.is_dir():
            for f in sorted(p for p in src.rglob("*") if p.is_file()):
                items.append({"src": str(f), "dst": str(plan.work / "input" / sub / f.relative_to(src))})
    return items


def plan_jobs(plan: NightPlan, exposures: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One single-epoch job per good exposure: its label, command (argument list) and output folder."""
    cfg = plan.config()
    inp = plan.work / "input"
    refcat = inp / "refcat" / "astrometric.fits"
    jobs = []
    for exp in exposures:
        if exp.get("problem"):
            continue
        out = plan.work / f"{int(exp['expnum']):08d}"
        raw = inp / "raw" / Path(exp["path"]).name
        command = shlex.split(cfg.site.batch.python) + [
            "single-epoch", "run", "--exposure", str(raw), "--calib", str(inp / "calib"),
            "--refcat", str(refcat), "--out", str(out), "--site", plan.site,
            "--survey", plan.survey, "--version", plan.version,
        ]
        jobs.append({"expnum": int(exp["expnum"]), "band": exp["band"], "command": command, "out": str(out)})
    return jobs


def qa_verdict(out_dir: str | os.PathLike[str]) -> tuple[bool, list[str], dict[str, Any]]:
    """Read a job's qa.json: (passed, reasons, summary). A missing qa.json fails with that reason."""
    path = Path(out_dir) / "qa.json"
    try:
        qa = json.loads(path.read_text())
    except FileNotFoundError:
        return False, [f"no QA output ({path} missing): the job did not finish"], {}
    except json.JSONDecodeError as err:
        return False, [f"QA output {path} is not valid JSON ({err.msg})"], {}
    reasons = []
    for check in qa.get("checks", []):
        if str(check.get("verdict", "")).lower() in {"fail", "failed"}:
            value, threshold = check.get("value"), check.get("threshold")
            reasons.append(f"{check.get('name')}={_fmt(value)} (threshold {_fmt(threshold)})")
    return not reasons, reasons, qa.get("exposure", {})


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def to_jsonable(obj: Any) -> Any:
    """Dataclasses to dicts, for XCom."""
    if isinstance(obj, list):
        return [to_jsonable(o) for o in obj]
    if hasattr(obj, "__dataclass_fields__"):
        return asdict(obj)
    return obj
