"""Cluster follow-up as a campaign, in plain functions: what ``dags/cluster_followup.py`` runs (no Airflow here).

A follow-up is a campaign (stage ``cluster_followup``): one item per candidate, whose batch job is
``cosmodm clusters target`` (:mod:`cosmodm_ops.clusters.target`), run in job arrays by the campaign
machinery (:mod:`cosmodm_ops.workflows.campaign`). The flow:

:func:`validate_followup` (the candidate list, the input, the site; bad input raises
:class:`~cosmodm_ops.campaign.CampaignInputError` naming the file, row and column, nothing created) ->
:func:`create_followup` (the campaign and its items) -> the arrays -> :func:`collect` (each candidate's
``result.json``; its picture filed in the archive as an ``inspection`` product with lineage to the job's
inputs; ``no_coverage`` / ``no_warps`` listed in the campaign's result) -> :func:`decision_requests` (one
question per candidate at or above the significance threshold) -> :func:`record_decision` (the person's
answer on the campaign item and as a QA row of the picture) -> :func:`finalize` (the cluster catalogue
FITS with the decisions, filed with lineage to every input and picture; the campaign done).

Archive tags of the products: stage ``clusters``, version the request's, tile the follow-up's label
``cf<campaign id>``, band the candidate (pictures); inputs not yet in the archive are filed first
(kinds ``catalog`` / ``warp``, band ``in<k>-<file stem>``) so every lineage edge points to a product.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from cosmodm_ops.campaign import CampaignInputError

__all__ = ["OPTIONS", "collect", "create_followup", "decision_requests", "finalize", "record_decision",
           "validate_followup"]

#: The person's answers, and what the catalogue's ``confirmed`` column says for each.
OPTIONS = ("confirm", "reject", "unsure")
_TOKEN_BAD = re.compile(r"[^A-Za-z0-9._+-]+")


def _token(text: str, limit: int = 64) -> str:
    out = _TOKEN_BAD.sub("_", str(text)).strip("._+-")[:limit].strip("._+-").replace("..", "_")
    return out or "x"


def _paths(value: Any) -> list[str]:
    if value in (None, "", []):
        return []
    return [v for v in re.split(r"[\s,]+", value) if v] if isinstance(value, str) else [str(v) for v in value]


def _file(field: str, value: str, what: str) -> str:
    path = Path(value).expanduser()
    if not path.is_file():
        msg = f"{field}: {value}: no such file ({what})"
        raise CampaignInputError(msg)
    return str(path.resolve())


def _inputs(p: dict[str, Any]) -> dict[str, Any]:
    warps, catalog = p.get("warps") or None, _paths(p.get("catalog"))
    if (warps is None) == (not catalog):
        msg = ("give exactly one input: warps (a folder of PS1-like warps, image level) or catalog (a merged "
               "object catalogue, or BAND=PATH dual-image catalogues, catalogue level)")
        raise CampaignInputError(msg)
    out: dict[str, Any] = {"warps": None, "catalog": []}
    if warps is not None:
        if not Path(str(warps)).is_dir():
            msg = f"warps: {warps}: no such folder (expected the PS1-like warps, sim/warps.py layout)"
            raise CampaignInputError(msg)
        out["warps"] = str(Path(str(warps)).resolve())
    for c in catalog:
        band, sep, path = c.rpartition("=") if "=" in c else ("", "", c)
        out["catalog"].append(f"{band}{sep}{_file('catalog', path, 'an object catalogue, FITS')}")
    pc, wcs = p.get("pseudocolour") or None, p.get("pseudocolour_wcs") or None
    if (pc is None) != (wcs is None):
        msg = "pseudocolour and pseudocolour_wcs go together (the PNG and a FITS file with its WCS), or neither"
        raise CampaignInputError(msg)
    out["config"] = _file("config", p["config"], "a YAML of finder settings") if p.get("config") else None
    if out["config"]:
        from cosmodm_ops.clusters.target import TargetInputError, finder_config

        try:
            finder_config(out["config"])
        except TargetInputError as err:
            raise CampaignInputError(str(err)) from err
    out["pseudocolour"] = _file("pseudocolour", pc, "the tile's pseudo-colour PNG") if pc else None
    out["pseudocolour_wcs"] = _file("pseudocolour_wcs", wcs, "a FITS file whose header is the PNG's WCS") if wcs else None
    return out


def validate_followup(params: dict[str, Any]) -> dict[str, Any]:
    """Check the trigger form's fields; return the request (absolute paths, the candidates' names)."""
    from cosmodm_ops.campaign.request import _known, _number
    from cosmodm_ops.clusters.catalog import CandidateListError, read_candidates
    from cosmodm_ops.model import TagError, validate_token

    p = {k: v for k, v in dict(params).items() if v not in (None, "")}
    survey = _known("surveys", str(p.get("survey") or "demo"), "survey")
    site = _known("sites", str(p.get("site") or "local"), "site")
    if not p.get("candidates"):
        msg = "candidates: give the candidate list (FITS or CSV with NAME, RA, DEC)"
        raise CampaignInputError(msg)
    try:
        candidates = read_candidates(Path(str(p["candidates"])).expanduser())
    except CandidateListError as err:
        raise CampaignInputError(str(err)) from err
    try:
        version = validate_token("version", p.get("version") or "v1")
    except TagError as err:
        raise CampaignInputError(f"version: {err}") from err
    stem = Path(str(p["candidates"])).stem
    return {"name": str(p.get("name") or f"cluster-followup-{stem}")[:200], "description": str(p.get("description") or ""),
            "survey": survey, "site": site, "version": version,
            "candidates": str(Path(str(p["candidates"])).expanduser().resolve()), **_inputs(p),
            "min_significance": _number("min_significance", p.get("min_significance", 5.0), float, 0.0),
            "chunk_size": _number("chunk_size", p.get("chunk_size", 100), int, 1, 10000),
            "max_retries": _number("max_retries", p.get("max_retries", 1), int, 0, 10),
            "names": [c.name for c in candidates], "positions": [[c.ra, c.dec] for c in candidates]}


def _item_args(req: dict[str, Any], name: str) -> list[str]:
    args = ["--candidates", req["candidates"], "--name", name]
    args += ["--warps", req["warps"]] if req["warps"] else ["--catalog", *req["catalog"]]
    args += ["--min-significance", repr(float(req["min_significance"]))]
    if req.get("config"):
        args += ["--config", req["config"]]
    if req.get("pseudocolour"):
        args += ["--pseudocolour", req["pseudocolour"], "--pseudocolour-wcs", req["pseudocolour_wcs"]]
    return args


def create_followup(req: dict[str, Any], *, source: str | None = None, created_by: str | None = None) -> dict[str, Any]:
    """The campaign (planned) with one item per candidate; idempotent per ``source`` (an Airflow run)."""
    from cosmodm_ops.campaign import CampaignRequest, CampaignState, Item, build_preview, target_config
    from cosmodm_ops.config import config_hash
    from cosmodm_ops.workflows.campaign import store_for

    creq = CampaignRequest(name=req["name"], survey=req["survey"], stage="cluster_followup",
                           target_version=req["version"], site=req["site"], description=req["description"],
                           chunk_size=int(req["chunk_size"]), max_retries=int(req["max_retries"]),
                           max_failure_rate=1.0)
    items, seen, bands = [], set(), set()
    for row, (name, (ra, dec)) in enumerate(zip(req["names"], req["positions"], strict=True), start=1):
        key = f"cluster_followup:{req['survey']}:{_token(name, 180)}"
        band = _token(name)  # the archive tag of its picture (64 characters at most)
        if key in seen:  # two names that differ only in characters a key cannot hold
            key = f"{key}-row{row}"
        if band in bands:
            band = _token(f"{band[:56]}-row{row}")
        seen.add(key)
        bands.add(band)
        items.append(Item(key=key, stage="cluster_followup", spec={"args": _item_args(req, name), "name": name,
                                                                    "ra": ra, "dec": dec, "row": row, "band": band}))
    store = store_for(req["survey"], req["site"])
    preview = build_preview(creq, items, store.archive)
    cid = store.create(creq, items, preview.to_dict(), state=CampaignState.PLANNED, source=source,
                       config_hash=config_hash(target_config(creq)), created_by=created_by)
    store.update_params(cid, followup={k: v for k, v in req.items() if k not in ("names", "positions")})
    return {"campaign": cid, "survey": req["survey"], "site": req["site"], "version": req["version"],
            "label": f"cf{cid:06d}", "min_significance": float(req["min_significance"]),
            "mode": "warps" if req["warps"] else "catalog", "candidates": len(items)}


def _camera(survey: str, site: str) -> str:
    from cosmodm_ops.config import load_config

    return load_config(survey, site=site).survey.camera


def _tags(plan: dict[str, Any], kind: str, band: str | None = None) -> dict[str, Any]:
    from cosmodm_ops.model import Tags

    return Tags(survey=plan["survey"], camera=_camera(plan["survey"], plan["site"]), stage="clusters",
                version=plan["version"], kind=kind, tile=plan["label"], band=band).to_dict()


def _ensure_inputs(archive: Any, plan: dict[str, Any], paths: list[str], cache: dict[str, Any]) -> list[Any]:
    """Manifest inputs of ``paths``; each file not yet in the archive (by sha256) is filed first."""
    from cosmodm_ops.archive.errors import ProductNotFound
    from cosmodm_ops.archive.store import sha256_file
    from cosmodm_ops.manifest import ManifestInput
    from cosmodm_ops.model import Tags

    role = "warp" if plan["mode"] == "warps" else "catalog"
    out = []
    for path in paths:
        if path not in cache:
            sha = sha256_file(path)
            try:
                archive.product(sha)
            except ProductNotFound:
                band = _token(f"in{len(cache):03d}-{Path(path).name.split('.')[0]}")
                archive.store(path, Tags.from_dict(_tags(plan, role, band)), sha256=sha)
            cache[path] = ManifestInput(role=role, path=path, sha256=sha, size=os.path.getsize(path))
        out.append(cache[path])
    return out


def _register(archive: Any, folder: Path, products: list[tuple[Path, dict[str, Any]]], inputs: list[Any],
              run_info: dict[str, Any]) -> list[int]:
    """Write ``folder/manifest.json`` for files already in ``folder`` and register it (lineage to ``inputs``)."""
    from cosmodm_ops.archive.store import sha256_file
    from cosmodm_ops.manifest import JobInfo, Manifest, ManifestProduct, write_manifest

    prods = [ManifestProduct(kind=tags["kind"], tags=tags, path=f.name, sha256=sha256_file(f), size=f.stat().st_size)
             for f, tags in products]
    manifest = Manifest(job=JobInfo(name=run_info.get("job_name"), site=run_info.get("site")), products=prods,
                        inputs=inputs)
    write_manifest(manifest, folder / "manifest.json")
    return archive.register_manifest(folder / "manifest.json", run_info)


def _result_of(item: dict[str, Any]) -> dict[str, Any] | None:
    if item["state"] != "done" or not item["out"]:
        return None
    try:
        return json.loads((Path(item["out"]) / "result.json").read_text())
    except (OSError, ValueError):
        return None


def collect(plan: dict[str, Any], ctx: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read every candidate's result; file its picture (``inspection`` product); the campaign's result."""
    from cosmodm_ops.campaign.execute import campaign_workdir
    from cosmodm_ops.campaign.store import now
    from cosmodm_ops.config import load_config
    from cosmodm_ops.workflows.campaign import store_for

    store = store_for(plan["survey"], plan["site"])
    work = campaign_workdir(load_config(plan["survey"], site=plan["site"]), plan["campaign"])
    cache: dict[str, Any] = {}
    res: dict[str, Any] = {"campaign": plan["campaign"], "label": plan["label"], "candidates": 0, "ok": [],
                           "no_coverage": [], "no_warps": [], "error": [], "failed": [], "to_confirm": [],
                           "below_threshold": [], "pictures": {}, "unused_colours": {}}
    for it in store.items(plan["campaign"]):
        name, doc = it["spec"]["name"], _result_of(it)
        res["candidates"] += 1
        if doc is None:
            res["failed"].append(name)
            continue
        res.setdefault(doc["status"], []).append(name)
        if doc.get("unused_colours"):
            res["unused_colours"][name] = doc["unused_colours"]
        if doc["status"] != "ok":
            continue
        sig = doc.get("significance")
        res["to_confirm" if sig is not None and sig >= plan["min_significance"] else "below_threshold"].append(name)
        picture = doc["products"].get("inspection") or doc["products"].get("curve")
        if picture and Path(picture).is_file():
            folder = work / "pictures" / _token(it["item_key"], 200)
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            band = it["spec"]["band"]
            shutil.copy2(picture, folder / f"{band}.png")
            info = {**(ctx or {}), "job_name": f"campaign-{plan['campaign']}/{it['item_key']}", "site": plan["site"],
                    "state": "done", "exit_code": 0, "start": now(), "end": now()}
            ids = _register(store.archive, folder, [(folder / f"{band}.png", _tags(plan, "inspection", band))],
                            _ensure_inputs(store.archive, plan, doc["inputs"], cache), info)
            res["pictures"][name] = ids[0]
            store.update_item(plan["campaign"], it["item_key"], product_ids=ids)
    store.update_params(plan["campaign"], result=res)
    return res


def _fmt(v: Any, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def _question_body(plan: dict[str, Any], it: dict[str, Any], doc: dict[str, Any], pid: int | None) -> str:
    """Markdown of one question: the numbers, the inspection picture and its product page, the options."""
    ui = os.environ.get("COSMODM_UI_PREFIX", "/cosmodm").rstrip("/")
    name, spec = it["spec"]["name"], it["spec"]
    numbers = [_fmt(doc.get("z_phot"), ".3f"), _fmt(doc.get("z_err"), ".3f"), _fmt(doc.get("richness"), ".1f"),
               _fmt(doc.get("significance"), ".1f"),
               f"{_fmt(doc.get('bcg_ra'), '.5f')}, {_fmt(doc.get('bcg_dec'), '.5f')}",
               "; ".join(doc.get("unused_colours") or []) or "none"]
    lines = [f"### Candidate `{name}` (RA {spec['ra']:.5f}, Dec {spec['dec']:.5f})", "",
             "| z_phot | z_err | richness | significance | BCG RA, Dec | colours not used |",
             "|---|---|---|---|---|---|", "| " + " | ".join(numbers) + " |", ""]
    if pid is not None:
        lines += [f"![inspection picture of {name}]({ui}/download/{pid})", "",
                  f"[The picture in the survey pages (product {pid}: tags, lineage, download)]({ui}/product/{pid})", ""]
    threshold = f"Significance threshold {plan['min_significance']:g}"
    lines.append(f"{threshold}; follow-up `{plan['label']}` (campaign {plan['campaign']}). **confirm**: a red-sequence "
                 "cluster at z_phot; **reject**: not a cluster; **unsure**: kept as unsure in the catalogue.")
    return "\n".join(lines)


def decision_requests(plan: dict[str, Any], collected: dict[str, Any]) -> list[dict[str, Any]]:
    """One HITL question per candidate at or above the threshold: ``{"subject", "body", "candidate"}``."""
    from cosmodm_ops.workflows.campaign import store_for

    by_name = {it["spec"]["name"]: it for it in store_for(plan["survey"], plan["site"]).items(plan["campaign"])}
    out = []
    for name in collected["to_confirm"]:
        it = by_name[name]
        doc = _result_of(it) or {}
        pid = collected["pictures"].get(name)
        out.append({"subject": f"Cluster candidate {name}: confirm, reject or unsure?",
                    "body": _question_body(plan, it, doc, pid),
                    "candidate": {**{k: plan[k] for k in ("campaign", "survey", "site")}, "name": name,
                                  "key": it["item_key"], "picture": pid, "significance": doc.get("significance")}})
    return out


def record_decision(candidate: dict[str, Any], verdict: str, who: str, when: str | None = None) -> dict[str, Any]:
    """Store a person's answer on the candidate's campaign item (and as a QA row of its picture)."""
    from cosmodm_ops.campaign.store import now
    from cosmodm_ops.workflows.campaign import store_for

    if verdict not in OPTIONS:
        msg = f"decision {verdict!r} for {candidate['name']}: expected one of {', '.join(OPTIONS)}"
        raise CampaignInputError(msg)
    store = store_for(candidate["survey"], candidate["site"])
    if candidate.get("picture") is not None:
        store.archive.record_qa([{"name": "cluster_confirmation", "value": candidate.get("significance"),
                                  "threshold": None, "verdict": verdict}], product=int(candidate["picture"]))
    return store.update_item(candidate["campaign"], candidate["key"], decision=verdict, decided_by=who,
                             decided_at=str(when or now()))


def _cluster_result(it: dict[str, Any], doc: dict[str, Any] | None) -> Any:
    from cosmodm_ops.clusters.finder import ClusterResult

    spec, nan = it["spec"], float("nan")
    if doc is None:
        return ClusterResult(spec["name"], spec["ra"], spec["dec"], "failed", message=str(it["diagnostics"] or ""))

    def num(key: str) -> float:
        return nan if doc.get(key) is None else float(doc[key])

    return ClusterResult(spec["name"], spec["ra"], spec["dec"], doc["status"], message=doc.get("message") or "",
                         z_phot=num("z_phot"), z_err=num("z_err"), richness=num("richness"),
                         significance=num("significance"), detected=bool(doc.get("detected")), bcg_ra=num("bcg_ra"),
                         bcg_dec=num("bcg_dec"), unused_colours=list(doc.get("unused_colours") or []))


def finalize(plan: dict[str, Any], ctx: dict[str, Any] | None = None) -> dict[str, Any]:
    """The cluster catalogue product: every candidate with its numbers and decision, filed with lineage to every
    input (warps or catalogues) and every picture; the campaign finished. Returns the campaign's result."""
    from cosmodm_ops.campaign.execute import campaign_workdir
    from cosmodm_ops.campaign.store import now
    from cosmodm_ops.clusters.catalog import write_cluster_catalogue
    from cosmodm_ops.config import load_config
    from cosmodm_ops.manifest import ManifestInput
    from cosmodm_ops.workflows.campaign import finish, store_for

    store = store_for(plan["survey"], plan["site"])
    items = store.items(plan["campaign"])
    docs = [(it, _result_of(it)) for it in items]
    decisions = {it["spec"]["name"]: (it["decision"], it["decided_by"] or "unknown") for it in items if it["decision"]}
    folder = campaign_workdir(load_config(plan["survey"], site=plan["site"]), plan["campaign"]) / "catalogue"
    folder.mkdir(parents=True, exist_ok=True)
    path = write_cluster_catalogue([_cluster_result(it, d) for it, d in docs], folder / "clusters.fits", decisions)
    cache: dict[str, Any] = {}
    inputs = _ensure_inputs(store.archive, plan, sorted({p for _, d in docs if d for p in d["inputs"]}), cache)
    for pid in sorted({int(p) for it in items for p in it["product_ids"]}):
        row = store.archive.product(pid)
        inputs.append(ManifestInput(role="inspection", path=str(store.archive.root / row["path"]),
                                    sha256=row["sha256"], size=int(row["size"])))
    info = {**(ctx or {}), "job_name": f"campaign-{plan['campaign']}/catalogue", "site": plan["site"],
            "state": "done", "exit_code": 0, "start": now(), "end": now()}
    ids = _register(store.archive, folder, [(path, _tags(plan, "cluster_catalog"))], inputs, info)
    result = {**(store.get(plan["campaign"])["params"].get("result") or {}), "catalogue_product": ids[0],
              "catalogue_path": store.archive.product(ids[0])["path"],
              "decisions": {k: {"verdict": v, "who": w} for k, (v, w) in decisions.items()}}
    store.update_params(plan["campaign"], result=result)
    verdicts = [{"confirm": "yes", "reject": "no"}.get(v, v) for v, _ in decisions.values()]
    note = (f"cluster catalogue: product {ids[0]}; confirmed yes {verdicts.count('yes')}, no {verdicts.count('no')}, "
            f"unsure {verdicts.count('unsure')}; no_coverage {len(result.get('no_coverage') or [])}, "
            f"no_warps {len(result.get('no_warps') or [])}, failed {len(result.get('failed') or [])}")
    summary = finish(plan["campaign"], survey=plan["survey"], site=plan["site"], note=note)
    return {**summary, **result}
