"""Read-side queries of the campaign pages over :mod:`cosmodm_ops.campaign.schema` (parameterized, paged).

Progress counts items by state: ``done``, ``running`` (submitted or running), ``failed``, ``skipped``
(skipped or cancelled), ``planned``. Core-hours used is the sum of the items' ``core_h_used`` against the
campaign's ``core_hours_estimated``. The ETA is the remaining items over the rate at which items were
done so far (done items / time from the campaign's creation to the last item done); None before any is done.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cosmodm_ops.campaign import schema as C
from cosmodm_ops.ui.paging import keyset, pager

__all__ = ["ITEM_GROUPS", "campaign_detail", "campaigns"]

ITEM_GROUPS = {"done": ("done",), "running": ("submitted", "running"), "failed": ("failed",),
               "skipped": ("skipped", "cancelled"), "planned": ("planned",)}
_GROUP_OF = {s: g for g, states in ITEM_GROUPS.items() for s in states}


def _ts(text: str | None) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(text) if text else None
    except ValueError:
        return None


def _progress(row: dict[str, Any], counts: dict[str, int], used: float | None, last_done: str | None) -> dict[str, Any]:
    total = sum(counts.values())
    remaining = counts["planned"] + counts["running"]
    eta = None
    start, end = _ts(row["created_at"]), _ts(last_done)
    if counts["done"] and start and end and end > start and remaining:
        eta = remaining * (end - start).total_seconds() / counts["done"]
    return {**row, "counts": counts, "total": total, "core_hours_used": used or 0.0, "eta_s": eta,
            "pct": {g: (100.0 * n / total if total else 0.0) for g, n in counts.items()}}


def campaigns(conn: Connection, *, after: int | None = None, before: int | None = None,
              per_page: int = 50) -> dict[str, Any]:
    """One page of campaigns, newest first (keyset on the id: ``after``/``before`` an id), with progress, core-hours, ETA."""
    st = _list_stmts(after is not None, before is not None)
    arg = {"after": after, "before": before, "limit": per_page}
    total = conn.execute(st["count"]).scalar() or 0
    rows = [dict(x) for x in conn.execute(st["page"], arg).mappings().all()]
    rows.sort(key=lambda r: -r["id"])
    progress = _progress_of(conn, rows)
    return {"rows": [{**r, **progress[r["id"]]} for r in rows], "total": int(total), "per_page": per_page,
            **pager(conn, st["ids"], C.campaign.c.id, [r["id"] for r in rows], int(total), per_page=per_page,
                    desc=True)}


@lru_cache(maxsize=4)
def _list_stmts(has_after: bool, has_before: bool) -> dict[str, Any]:
    """The campaigns list's statements for one shape of page (bound ``after``, ``before``, ``limit``), built once."""
    c = C.campaign
    q = sa.select(c.c.id, c.c.name, c.c.survey, c.c.stage, c.c.state, c.c.site, c.c.target_version,
                  c.c.core_hours_estimated, c.c.created_at, c.c.updated_at, c.c.note, c.c.source)
    page = keyset(q, c.c.id, after=sa.bindparam("after") if has_after else None,
                  before=sa.bindparam("before") if has_before else None, per_page=sa.bindparam("limit"), desc=True)
    return {"count": sa.select(sa.func.count()).select_from(c), "page": page, "ids": sa.select(c.c.id)}


def campaign_detail(conn: Connection, cid: int, *, state: str | None = None, after: int | None = None,
                    before: int | None = None, per_page: int = 100) -> dict[str, Any] | None:
    """A campaign with its progress, one page of items (``state`` filter: an item state or a group; keyset on
    the item id: ``after``/``before`` an id)."""
    row = conn.execute(_campaign_stmts()["campaign"], {"cid": cid}).mappings().first()
    if row is None:
        return None
    summary = _progress_of(conn, [dict(row)])[cid]
    states = ITEM_GROUPS.get(state or "", (state,) if state else ())
    st = _items_stmts(bool(states), after is not None, before is not None)
    arg = {"cid": cid, "states": list(states), "after": after, "before": before, "limit": per_page}
    n = conn.execute(st["count"], arg).scalar() or 0
    items = [dict(x) for x in conn.execute(st["items"], arg).mappings().all()]
    items.sort(key=lambda x: x["id"])
    failures = [dict(x) for x in conn.execute(_campaign_stmts()["failures"], {"cid": cid}).mappings().all()]
    for f in failures:
        f["log_tail"] = "\n".join((f["diagnostics"] or "").splitlines()[-15:])
    return {"campaign": {**dict(row), **summary}, "items": items, "n_items": int(n), "state": state,
            "per_page": per_page, "failures": failures,
            **pager(conn, st["ids"], C.campaign_item.c.id, [x["id"] for x in items], int(n), per_page=per_page,
                    desc=False, params=arg),
            "pending_decisions": conn.execute(_campaign_stmts()["pending"], {"cid": cid}).scalar() or 0}


@lru_cache(maxsize=1)
def _campaign_stmts() -> dict[str, Any]:
    """The campaign pages' statements that do not depend on a filter, built once (bound ``cid``; ``progress``: expanding
    ``ids``, shared with the campaigns list)."""
    c, i, cp, cid = C.campaign, C.campaign_item, C.campaign_progress, sa.bindparam("cid")
    return {
        "campaign": sa.select(c).where(c.c.id == cid),
        "failures": sa.select(i.c.item_key, i.c.exit_code, i.c.attempts, i.c.diagnostics, i.c.job_id)
        .where(i.c.campaign_id == cid, i.c.state == "failed").order_by(i.c.id).limit(20),
        "pending": sa.select(sa.func.count()).select_from(i).where(
            i.c.campaign_id == cid, i.c.qa_verdict == "borderline", i.c.decision.is_(None)),
        "progress": sa.select(cp.c.campaign_id, cp.c.state, cp.c.n, cp.c.core_h, cp.c.last_at).where(
            cp.c.campaign_id.in_(sa.bindparam("ids", expanding=True))),
    }


@lru_cache(maxsize=8)
def _items_stmts(by_state: bool, has_after: bool, has_before: bool) -> dict[str, Any]:
    """A campaign's items for one shape of filter (bound ``cid``, expanding ``states``, ``after``, ``before``,
    ``limit``): their count, one keyset page, and the ids the pager counts from; built once per shape."""
    i = C.campaign_item
    cond = [i.c.campaign_id == sa.bindparam("cid")]
    cond += [i.c.state.in_(sa.bindparam("states", expanding=True))] if by_state else []
    page = keyset(sa.select(i).where(*cond), i.c.id, after=sa.bindparam("after") if has_after else None,
                  before=sa.bindparam("before") if has_before else None, per_page=sa.bindparam("limit"), desc=False)
    return {"count": sa.select(sa.func.count()).select_from(i).where(*cond), "items": page,
            "ids": sa.select(i.c.id).where(*cond)}


def _progress_of(conn: Connection, rows: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """The progress blocks of campaign rows (``id``, ``created_at``) from their ``campaign_progress`` rows (kept by the
    campaign store: a few rows per campaign, not its items)."""
    ids = [r["id"] for r in rows]
    counts = {cid: dict.fromkeys(ITEM_GROUPS, 0) for cid in ids}
    used, last = dict.fromkeys(ids, 0.0), dict.fromkeys(ids)
    if ids:
        for cid, state, n, h, t in conn.execute(_campaign_stmts()["progress"], {"ids": ids}).all():
            counts[cid][_GROUP_OF.get(state, "planned")] += int(n)
            used[cid] += float(h or 0.0)
            if state == "done":
                last[cid] = t
    keys = ("counts", "total", "core_hours_used", "eta_s", "pct")
    out = {}
    for r in rows:
        p = _progress({"id": r["id"], "created_at": r["created_at"]}, counts[r["id"]], used[r["id"]], last[r["id"]])
        out[r["id"]] = {k: p[k] for k in keys}
    return out
