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
    "ExposureRef",
    "NightPlan",
    "archive_settings",
    "discover_exposures",
    "plan_jobs",
    "qa_verdict",
    "resolve_night",
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
        """Where the night's input arrives (``COSMODM_RAW_SOURCE`` overrides the site's ``raw_source``)."""
        return _site_path(os.environ.get("COSMODM_RAW_SOURCE") or self.config().site.raw_source) / self.night

    @property
    def work(self) -> Path:
        """The night's working folder (``COSMODM_WORK_ROOT`` overrides the site's ``work_root``)."""
        return _site_path(os.environ.get("COSMODM_WORK_ROOT") or self.config().site.work_root) / self.night


def _site_path(value: str) -> Path:
    """Site paths: absolute as given; relative ones against ``COSMODM_HOME`` (default: the checkout)."""
    path = Path(value).expanduser()
    if path.is_absolute():
        return path
    home = os.environ.get("COSMODM_HOME") or str(Path(__file__).resolve().parents[2])
    return Path(home) / path


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
            "--survey", plan.survey, "--version", plan.version, "--jobs", str(cfg.site.batch.cores),
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
    return not reasons, reasons, qa.get("exposure") or qa.get("summary") or {}  # coadd qa.json: "summary"


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def to_jsonable(obj: Any) -> Any:
    """Dataclasses to dicts, for XCom."""
    if isinstance(obj, list):
        return [to_jsonable(o) for o in obj]
    if hasattr(obj, "__dataclass_fields__"):
        return asdict(obj)
    return obj


# ---------------------------------------------------------------------------- archive steps
def archive_for(plan: NightPlan):
    """The archive of the plan's site (``COSMODM_DB`` / ``COSMODM_ARCHIVE_ROOT`` override)."""
    from cosmodm_ops.archive import Archive

    db_url, root = archive_settings(plan.config())
    return Archive(db_url, root)


def _exposure_selector(plan: NightPlan, expnum: int) -> dict[str, Any]:
    return {"survey": plan.survey, "night": plan.night, "expnum": int(expnum)}


def register_raw(plan: NightPlan, exposures: list[dict[str, Any]]) -> int:
    """File every raw exposure (an upsert); quarantine the ones with a problem. Returns the count filed."""
    from cosmodm_ops.model import Tags

    cfg = plan.config()
    archive = archive_for(plan)
    archive.init()
    n = 0
    for exp in exposures:
        band = exp["band"] if exp["band"] != "unknown" else None
        tags = Tags(survey=plan.survey, camera=cfg.camera.name, stage="raw", version="raw", kind="raw",
                    night=plan.night, expnum=int(exp["expnum"]), band=band)
        archive.register_raw(exp["path"], tags, sha256=exp["sha256"], header=exp.get("header") or {})
        n += 1
        if exp.get("problem"):
            archive.quarantine(_exposure_selector(plan, exp["expnum"]), [exp["problem"]])
    return n


def already_done(plan: NightPlan, expnum: int) -> bool:
    """True when the exposure already has single-epoch products of this version in the archive."""
    found = archive_for(plan).find(survey=plan.survey, night=plan.night, expnum=int(expnum),
                                   version=plan.version, stage="single_epoch", kind="qa", limit=1)
    return bool(found)


def register_exposure(plan: NightPlan, expnum: int, band: str, out: str,
                      run_info: dict[str, Any] | None) -> dict[str, Any]:
    """Products, lineage, QA rows, objects and the batch accounting of one job into the archive."""
    archive = archive_for(plan)
    manifest = Path(out) / "manifest.json"
    info = dict(run_info or {})
    if "job_id" in info and "batch_job_id" not in info:
        info["batch_job_id"] = str(info.pop("job_id"))
    if "elapsed_s" in info:
        info.setdefault("elapsed_s", info["elapsed_s"])
    allowed = {"dag_id", "run_id", "task_id", "try_number", "batch_job_id", "site", "host", "start", "end",
               "state", "exit_code", "bytes_read", "bytes_written"}
    ids = archive.register_manifest(manifest, {k: v for k, v in info.items() if k in allowed and v is not None})
    return {"expnum": int(expnum), "band": band, "out": str(out), "products": len(ids), "product_ids": list(ids)}


def _tiles_touched(plan: NightPlan, out: str) -> list[str]:
    """Tiles of the survey's tiling that the exposure's accepted CCD images touch."""
    from astropy.io import fits as afits
    from astropy.wcs import WCS

    from cosmodm_ops.coadd.tiling import ccd_corners, load_tiling
    from cosmodm_ops.manifest import read_manifest

    cfg = plan.config()
    tiling = load_tiling(cfg.survey.tiling)
    names: set[str] = set()
    manifest = read_manifest(Path(out) / "manifest.json")
    for prod in manifest.products:
        if prod.kind != "image":
            continue
        path = Path(out) / prod.path
        with afits.open(path) as hdul:
            hdu = next(h for h in hdul if h.data is not None and getattr(h.data, "ndim", 0) == 2)
            ny, nx = hdu.data.shape
            wcs = WCS(hdu.header)
        ra, dec = ccd_corners(wcs, nx, ny)
        names.update(t.name for t in tiling.tiles_touching(ra, dec))
    return sorted(names)


def gate_exposure(plan: NightPlan, expnum: int, registered: dict[str, Any]) -> dict[str, Any]:
    """The QA gate: accept, or quarantine the exposure with the failed checks as reasons."""
    passed, reasons, summary = qa_verdict(registered["out"])
    verdict = {"expnum": int(expnum), "band": registered.get("band"), "accepted": passed, "reasons": reasons,
               "summary": summary, "tiles": []}
    archive = archive_for(plan)
    if not passed:
        archive.quarantine(_exposure_selector(plan, expnum), reasons)
        return verdict
    try:
        verdict["tiles"] = _tiles_touched(plan, registered["out"])
    except (OSError, StopIteration, ValueError) as err:
        log.warning("exposure %s: cannot work out the tiles it touches (%s)", expnum, err)
    return verdict


def night_counts(night: str, db_url: str, root: str, survey: str = "demo") -> dict[str, Any]:
    """Exposures, accepted, quarantined and failed of a night, from the archive; plus the report path.

    Accepted = single-epoch images archived and no quarantine; failed = neither processed nor
    quarantined (the job failed: the night's Airflow run says why).
    """
    from cosmodm_ops.archive import Archive

    archive = Archive(db_url, root)
    raws = archive.find(survey=survey, night=night, kind="raw", stage="raw")
    expnums = sorted({int(r["expnum"]) for r in raws})
    quarantined = {e for e in expnums if archive.is_quarantined({"survey": survey, "night": night, "expnum": e})}
    processed = {int(p["expnum"]) for p in archive.find(survey=survey, night=night, kind="image")}
    accepted = [e for e in expnums if e in processed and e not in quarantined]
    reports = archive.find(survey=survey, night=night, kind="report", stage="qa")
    report = str(Path(root) / reports[-1]["path"]) if reports else None
    return {"exposures": len(expnums), "accepted": len(accepted), "quarantined": len(quarantined),
            "failed": len(expnums) - len(accepted) - len(quarantined), "report": report}


def accepted_tiles(night: str, db_url: str, root: str, survey: str = "demo") -> dict[str, dict[str, int]]:
    """Tiles the night's accepted images touch: ``{tile: {band: number of CCD images}}``."""
    from astropy.io import fits as afits
    from astropy.wcs import WCS

    from cosmodm_ops.archive import Archive
    from cosmodm_ops.archive.layout import resolve_under
    from cosmodm_ops.coadd.tiling import ccd_corners, load_tiling

    archive = Archive(db_url, root)
    cfg = load_config(survey)
    tiling = load_tiling(cfg.survey.tiling)
    out: dict[str, dict[str, int]] = {}
    for img in archive.find(survey=survey, night=night, kind="image"):
        if archive.is_quarantined({"survey": survey, "night": night, "expnum": int(img["expnum"])}):
            continue
        with afits.open(resolve_under(archive.root, img["path"])) as hdul:
            hdu = next(h for h in hdul if h.data is not None and getattr(h.data, "ndim", 0) == 2)
            ny, nx = hdu.data.shape
            wcs = WCS(hdu.header)
        ra, dec = ccd_corners(wcs, nx, ny)
        for tile in tiling.tiles_touching(ra, dec):
            bands = out.setdefault(tile.name, {})
            bands[img["band"]] = bands.get(img["band"], 0) + 1
    return out


def night_summary(plan: NightPlan, exposures: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts and the HTML QA report of the night, filed in the archive (stage qa, kind report)."""
    import tempfile

    from cosmodm_ops.model import Tags
    from cosmodm_ops.qa.report import ExposureQA, write_night_report

    cfg = plan.config()
    archive = archive_for(plan)
    records = []
    for exp in exposures:
        expnum = int(exp["expnum"])
        out = plan.work / f"{expnum:08d}"
        reasons = archive.quarantine_reasons(_exposure_selector(plan, expnum))
        qa: dict[str, Any] = {}
        if (out / "qa.json").exists():
            try:
                qa = json.loads((out / "qa.json").read_text())
            except json.JSONDecodeError:
                qa = {}
        if not qa and not reasons:
            reasons = ["not processed (the job failed or did not run)"]
        catalogs = []
        if not reasons and (out / "manifest.json").exists():
            from cosmodm_ops.manifest import read_manifest

            catalogs = [str(out / p.path) for p in read_manifest(out / "manifest.json").products
                        if p.kind == "catalog"]
        records.append(ExposureQA(expnum=expnum, band=str(exp.get("band")), accepted=not reasons,
                                  reasons=reasons, summary=qa.get("exposure", {}) if isinstance(qa, dict) else {},
                                  ccds=qa.get("ccds", []) if isinstance(qa, dict) else [], catalogs=catalogs))
    with tempfile.TemporaryDirectory(prefix="cosmodm-report-") as tmp:
        index = write_night_report(plan.night, records, Path(tmp) / "report")
        tags = Tags(survey=plan.survey, camera=cfg.camera.name, stage="qa", version=plan.version, kind="report",
                    night=plan.night)
        stored = archive.store(index, tags)
    report = str(Path(archive.root) / stored.path)
    accepted = sum(r.accepted for r in records)
    return {"night": plan.night, "exposures": len(records), "accepted": accepted,
            "quarantined": len(records) - accepted, "report": report}
