"""Which items a campaign redoes: a selection over the archive database, keyed idempotently.

An item is one unit of reprocessing with a stable key:

* ``single_epoch:<survey>:<expnum:08d>``: one exposure (its raw file is in the archive);
* ``coadd:<survey>:<tile>:<band>``: one band of a tile;
* ``calibrate:<survey>:<tile>``: the multi-band catalogs and calibration of a tile.

Selection filters combine (all must hold): nights or a night range, exposure numbers, bands,
tiles or an RA/Dec box on a tiling, the QA verdict (``pass``, ``fail``, ``quarantined``),
"stale" (current products made from a superseded product: what ``archive stale`` computes),
and "made by" a pipeline version or config hash. An item whose current products were made
with the target version and configuration already is *up to date* (it is kept, marked skipped).

Only the public :class:`~cosmodm_ops.archive.Archive` API and the archive schema tables are used.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import aliased

from cosmodm_ops.archive import schema as S
from cosmodm_ops.campaign.request import CampaignRequest

__all__ = ["Item", "downstream_of", "in_chunks", "item_key", "prior_run", "rows_of", "select_items"]

log = logging.getLogger(__name__)


@dataclass
class Item:
    """One item of a campaign (JSON-able)."""

    key: str
    stage: str
    night: str | None = None
    expnum: int | None = None
    band: str | None = None
    tile: str | None = None
    up_to_date: bool = False
    replaces: list[int] = field(default_factory=list)
    spec: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def item_key(stage: str, survey: str, *, expnum: int | None = None, tile: str | None = None,
             band: str | None = None) -> str:
    """The stable key of an item (one ``campaign_item`` row per campaign and key)."""
    if stage == "single_epoch":
        return f"single_epoch:{survey}:{int(expnum or 0):08d}"
    if stage == "coadd":
        return f"coadd:{survey}:{tile}:{band}"
    return f"calibrate:{survey}:{tile}"


def rows_of(archive: Any, query: Any) -> list[dict[str, Any]]:
    """Rows of a read-only query on the archive database, as dicts."""
    with archive.engine.connect() as conn:
        return [dict(r) for r in conn.execute(query).mappings()]


def in_chunks(archive: Any, build: Any, values: list[Any], size: int = 500) -> list[dict[str, Any]]:
    """``rows_of(build(part))`` over parts of ``values`` (IN lists stay short)."""
    out: list[dict[str, Any]] = []
    for i in range(0, len(values), size):
        out += rows_of(archive, build(values[i:i + size]))
    return out


def downstream_of(archive: Any, seeds: list[int]) -> dict[int, int]:
    """Current products made, directly or not, from any of ``seeds``: ``{product_id: depth}``.

    One recursive CTE over ``lineage`` per 500 seeds (the walk of ``Archive.stale``).
    """
    out: dict[int, int] = {}
    sql = """
WITH RECURSIVE walk(id, depth) AS (
    SELECT id, 0 FROM products WHERE id IN ({ids})
    UNION
    SELECT l.product_id, w.depth + 1 FROM lineage l JOIN walk w ON l.input_product_id = w.id WHERE w.depth < 64
)
SELECT w.id AS id, MIN(w.depth) AS depth FROM walk w JOIN products p ON p.id = w.id
WHERE w.depth > 0 AND p.state = 'current' GROUP BY w.id
"""
    for i in range(0, len(seeds), 500):
        part = [int(s) for s in seeds[i:i + 500]]
        with archive.engine.connect() as conn:
            for r in conn.execute(sa.text(sql.format(ids=",".join(str(s) for s in part)))):
                out[int(r.id)] = min(int(r.depth), out.get(int(r.id), 99))
    return out


def prior_run(archive: Any, run_id: int | None) -> dict[str, Any]:
    """What an earlier run tells a reprocessing: its manifest (inputs, cpu block), bytes, config hash."""
    if run_id is None:
        return {}
    rows = rows_of(archive, sa.select(S.runs).where(S.runs.c.id == int(run_id)))
    if not rows:
        return {}
    run = rows[0]
    info: dict[str, Any] = {"run_id": int(run["id"]), "config_hash": run["config_hash"],
                            "bytes_read": run["bytes_read"], "bytes_written": run["bytes_written"],
                            "manifest": run["manifest_path"]}
    try:
        manifest = json.loads(Path(run["manifest_path"]).read_text())
    except (OSError, TypeError, ValueError):
        return info
    info["cpu_s"] = (manifest.get("cpu") or {}).get("total_s")
    info["inputs"] = {i["role"]: i["path"] for i in manifest.get("inputs", []) if "role" in i and "path" in i}
    return info


# ---------------------------------------------------------------------------- single-epoch items
def _exposures(archive: Any, req: CampaignRequest) -> list[dict[str, Any]]:
    e = S.exposures
    q = sa.select(e).where(e.c.survey == req.survey)
    if req.nights:
        q = q.where(e.c.night.in_(req.nights))
    if req.night_from:
        q = q.where(e.c.night >= req.night_from)
    if req.night_to:
        q = q.where(e.c.night <= req.night_to)
    if req.expnums:
        q = q.where(e.c.expnum.in_(req.expnums))
    if req.bands:
        q = q.where(e.c.band.in_(req.bands))
    if req.box:
        q = q.where(e.c.ra.between(req.box[0], req.box[1]), e.c.dec.between(req.box[2], req.box[3]))
    return rows_of(archive, q.order_by(e.c.night, e.c.expnum))


def _tile_expnums(archive: Any, req: CampaignRequest) -> set[int]:
    """Exposures whose images went into the tiles' coadds, or whose pointing lies on the tiles."""
    from cosmodm_ops.coadd.tiling import load_tiling

    p, lin = S.products, S.lineage
    coadds = [r["id"] for r in rows_of(archive, sa.select(p.c.id).where(
        p.c.survey == req.survey, p.c.stage == "coadd", p.c.tile.in_(req.tiles)))]
    inp = aliased(p)
    found = {int(r["expnum"]) for r in in_chunks(archive, lambda ids: sa.select(inp.c.expnum).select_from(
        lin.join(inp, inp.c.id == lin.c.input_product_id)).where(lin.c.product_id.in_(ids),
                                                                 inp.c.expnum.isnot(None)), coadds)}
    tiling = load_tiling(req.tiling)
    tiles = [tiling.tile(t) for t in req.tiles]
    e = S.exposures
    for r in rows_of(archive, sa.select(e.c.expnum, e.c.ra, e.c.dec).where(e.c.survey == req.survey)):
        if r["ra"] is not None and any(bool(t.contains(r["ra"], r["dec"])) for t in tiles):
            found.add(int(r["expnum"]))
    return found


def _current_se(archive: Any, survey: str, expnums: list[int]) -> dict[int, list[dict[str, Any]]]:
    p = S.products
    by: dict[int, list[dict[str, Any]]] = {}
    for r in in_chunks(archive, lambda ids: sa.select(p.c.id, p.c.expnum, p.c.version, p.c.kind, p.c.run_id,
                                                       p.c.size).where(
            p.c.survey == survey, p.c.stage == "single_epoch", p.c.state == "current", p.c.expnum.in_(ids)),
            expnums):
        by.setdefault(int(r["expnum"]), []).append(r)
    return by


def _qa_state(archive: Any, req: CampaignRequest, exp: dict[str, Any]) -> str:
    sel = {"survey": req.survey, "night": exp["night"], "expnum": int(exp["expnum"])}
    if archive.is_quarantined(sel):
        return "quarantined"
    failed = [q for q in archive.qa_results(expnum=int(exp["expnum"]), survey=req.survey)
              if str(q["verdict"]).lower() in ("fail", "failed")]
    return "fail" if failed else "pass"


def _single_epoch(archive: Any, req: CampaignRequest, target_hash: str, stale: set[int] | None) -> list[Item]:
    exps = _exposures(archive, req)
    if req.tiles:
        wanted = _tile_expnums(archive, req)
        exps = [x for x in exps if int(x["expnum"]) in wanted]
    current = _current_se(archive, req.survey, [int(x["expnum"]) for x in exps])
    items = []
    for exp in exps:
        expnum = int(exp["expnum"])
        prods = current.get(expnum, [])
        if req.qa != "any":
            state = _qa_state(archive, req, exp)
            if state != req.qa and not (req.qa == "fail" and state == "quarantined"):
                continue
        if stale is not None and not any(int(pr["id"]) in stale for pr in prods):
            continue
        if req.from_version and not any(pr["version"] == req.from_version for pr in prods):
            continue
        runs = sorted({pr["run_id"] for pr in prods if pr["run_id"] is not None})
        prev = prior_run(archive, runs[-1]) if runs else {}
        if req.from_config_hash and prev.get("config_hash") != req.from_config_hash:
            continue
        at_target = [pr for pr in prods if pr["version"] == req.target_version]
        up_to_date = bool(at_target) and prev.get("config_hash") == target_hash
        raw = archive.find(survey=req.survey, expnum=expnum, stage="raw", kind="raw", limit=1)
        items.append(Item(
            key=item_key("single_epoch", req.survey, expnum=expnum), stage="single_epoch", night=exp["night"],
            expnum=expnum, band=exp["band"], up_to_date=up_to_date,
            replaces=sorted(int(pr["id"]) for pr in prods),
            spec={"camera": exp["camera"], "raw": str(Path(archive.root) / raw[0]["path"]) if raw else None,
                  "prev": prev, "prev_versions": sorted({pr["version"] for pr in prods}),
                  "bytes_read_guess": sum(int(pr["size"]) for pr in prods if pr["kind"] == "image")}))
    return items


# ---------------------------------------------------------------------------- coadd and calibrate items
def _tile_items(archive: Any, req: CampaignRequest, stage: str, target_hash: str,
                stale: set[int] | None, only: set[tuple[str, str | None]] | None = None) -> list[Item]:
    p = S.products
    kind = "coadd" if stage == "coadd" else "coadd_catalog"
    q = sa.select(p.c.id, p.c.tile, p.c.band, p.c.version, p.c.run_id, p.c.size).where(
        p.c.survey == req.survey, p.c.stage == "coadd", p.c.state == "current", p.c.kind == kind)
    if req.tiles:
        q = q.where(p.c.tile.in_(req.tiles))
    if req.bands and stage == "coadd":
        q = q.where(p.c.band.in_(req.bands))
    groups: dict[tuple[str, str | None], list[dict[str, Any]]] = {}
    for r in rows_of(archive, q.order_by(p.c.tile, p.c.band)):
        groups.setdefault((r["tile"], r["band"] if stage == "coadd" else None), []).append(r)
    box_tiles = _tiles_in_box(req, {t for t, _ in groups}) if req.box else None
    items = []
    for (tile, band), prods in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
        if only is not None and (tile, band) not in only:
            continue
        if box_tiles is not None and tile not in box_tiles:
            continue
        if stale is not None and not any(int(pr["id"]) in stale for pr in prods):
            continue
        if req.from_version and not any(pr["version"] == req.from_version for pr in prods):
            continue
        runs = sorted({pr["run_id"] for pr in prods if pr["run_id"] is not None})
        prev = prior_run(archive, runs[-1]) if runs else {}
        up_to_date = any(pr["version"] == req.target_version for pr in prods) and \
            prev.get("config_hash") == target_hash
        bands = sorted({pr["band"] for pr in prods})
        items.append(Item(key=item_key(stage, req.survey, tile=tile, band=band), stage=stage, tile=tile,
                          band=band, up_to_date=up_to_date, replaces=sorted(int(pr["id"]) for pr in prods),
                          spec={"prev": prev, "bands": bands, "prev_versions": sorted({pr["version"] for pr in prods})}))
    return items


def current_coadd_folders(archive: Any, survey: str, tile: str, bands: list[str]) -> list[str]:
    """Job folders (holding ``manifest.json``) of a tile's current coadds in ``bands``: ``coadd calibrate --coadds``.

    Read when the calibrate item's chunk is written, so a ``single_epoch+downstream`` campaign
    calibrates the coadds its earlier chunk just made.
    """
    p, r = S.products, S.runs
    q = sa.select(p.c.band, r.c.manifest_path).join(r, r.c.id == p.c.run_id).where(
        p.c.survey == survey, p.c.stage == "coadd", p.c.kind == "coadd", p.c.state == "current", p.c.tile == tile)
    if bands:
        q = q.where(p.c.band.in_(bands))
    found = {row["band"]: str(Path(row["manifest_path"]).parent) for row in rows_of(archive, q.order_by(p.c.id))
             if row["manifest_path"]}
    return [found[b] for b in sorted(found)]


def _tiles_in_box(req: CampaignRequest, names: set[str]) -> set[str]:
    from cosmodm_ops.coadd.tiling import load_tiling

    tiling = load_tiling(req.tiling)
    ra0, ra1, dec0, dec1 = req.box or (0, 360, -90, 90)
    return {n for n in names if ra0 <= tiling.tile(n).ra <= ra1 and dec0 <= tiling.tile(n).dec <= dec1}


def _downstream_tiles(archive: Any, items: list[Item]) -> set[tuple[str, str | None]]:
    """(tile, band) and (tile, None) of the coadd products downstream of the items' products."""
    seeds = [pid for it in items for pid in it.replaces]
    ids = sorted(downstream_of(archive, seeds))
    p = S.products
    rows = in_chunks(archive, lambda part: sa.select(p.c.tile, p.c.band).where(
        p.c.id.in_(part), p.c.stage == "coadd"), ids)
    return {(r["tile"], r["band"]) for r in rows} | {(r["tile"], None) for r in rows}


def select_items(archive: Any, req: CampaignRequest, target_hash: str) -> list[Item]:
    """Every item the request selects, in stage order, with ``up_to_date`` set.

    Parameters
    ----------
    archive : Archive
        The archive to select from.
    req : CampaignRequest
        The validated request.
    target_hash : str
        :func:`cosmodm_ops.config.config_hash` of the target configuration.
    """
    stale: set[int] | None = None
    if req.stale or req.stale_from:
        rows = archive.stale(req.stale_from) if req.stale_from else archive.stale()
        stale = {int(r["id"]) for r in rows}
    if req.stage in ("single_epoch", "single_epoch+downstream"):
        items = _single_epoch(archive, req, target_hash, stale)
        if req.stage == "single_epoch+downstream":
            todo = [it for it in items if not it.up_to_date]
            down = _downstream_tiles(archive, todo) if todo else set()
            if down:
                coadds = _tile_items(archive, req, "coadd", target_hash, None, only=down)
                cals = _tile_items(archive, req, "calibrate", target_hash, None, only=down)
                for it in coadds + cals:
                    it.up_to_date = False  # their inputs change
                items += coadds + cals
        return items
    return _tile_items(archive, req, req.stage, target_hash, stale)
