"""Read-side queries of the campaign pages over :mod:`cosmodm_ops.campaign.schema` (parameterized, paged).

Progress counts items by state: ``done``, ``running`` (submitted or running), ``failed``, ``skipped``
(skipped or cancelled), ``planned``. Core-hours used is the sum of the items' ``core_h_used`` against the
campaign's ``core_hours_estimated``. The ETA is the remaining items over the rate at which items were
done so far (done items / time from the campaign's creation to the last item done); None before any is done.
"""

from __future__ import annotations

import datetime as dt
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
    c = C.campaign
    total = conn.execute(sa.select(sa.func.count()).select_from(c)).scalar() or 0
    q = sa.select(c.c.id, c.c.name, c.c.survey, c.c.stage, c.c.state, c.c.site, c.c.target_version,
                  c.c.core_hours_estimated, c.c.created_at, c.c.updated_at, c.c.note, c.c.source)
    rows = [dict(x) for x in conn.execute(keyset(q, c.c.id, after=after, before=before, per_page=per_page,
                                                  desc=True)).mappings().all()]
    rows.sort(key=lambda r: -r["id"])
    progress = _progress_of(conn, rows)
    return {"rows": [{**r, **progress[r["id"]]} for r in rows], "total": int(total), "per_page": per_page,
            **pager(conn, sa.select(c.c.id), c.c.id, [r["id"] for r in rows], int(total), per_page=per_page,
                     desc=True)}


def campaign_detail(conn: Connection, cid: int, *, state: str | None = None, after: int | None = None,
                    before: int | None = None, per_page: int = 100) -> dict[str, Any] | None:
    """A campaign with its progress, one page of items (``state`` filter: an item state or a group; keyset on
    the item id: ``after``/``before`` an id)."""
    c, i = C.campaign, C.campaign_item
    row = conn.execute(sa.select(c).where(c.c.id == cid)).mappings().first()
    if row is None:
        return None
    summary = _progress_of(conn, [dict(row)])[cid]
    states = ITEM_GROUPS.get(state or "", (state,) if state else ())
    cond = [i.c.campaign_id == cid] + ([i.c.state.in_(states)] if states else [])
    n = conn.execute(sa.select(sa.func.count()).select_from(i).where(*cond)).scalar() or 0
    items = [dict(x) for x in conn.execute(keyset(sa.select(i).where(*cond), i.c.id, after=after, before=before,
                                                   per_page=per_page, desc=False)).mappings().all()]
    items.sort(key=lambda x: x["id"])
    failures = [dict(x) for x in conn.execute(sa.select(i.c.item_key, i.c.exit_code, i.c.attempts, i.c.diagnostics,
                                                        i.c.job_id)
                                              .where(i.c.campaign_id == cid, i.c.state == "failed")
                                              .order_by(i.c.id).limit(20)).mappings().all()]
    for f in failures:
        f["log_tail"] = "\n".join((f["diagnostics"] or "").splitlines()[-15:])
    return {"campaign": {**dict(row), **summary}, "items": items, "n_items": int(n), "state": state,
            "per_page": per_page, "failures": failures,
            **pager(conn, sa.select(i.c.id).where(*cond), i.c.id, [x["id"] for x in items], int(n),
                     per_page=per_page, desc=False),
            "pending_decisions": conn.execute(sa.select(sa.func.count()).select_from(i).where(
                i.c.campaign_id == cid, i.c.qa_verdict == "borderline", i.c.decision.is_(None))).scalar() or 0}


def _progress_of(conn: Connection, rows: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """The progress blocks of campaign rows (``id``, ``created_at``) from one aggregate query."""
    i = C.campaign_item
    ids = [r["id"] for r in rows]
    counts = {cid: dict.fromkeys(ITEM_GROUPS, 0) for cid in ids}
    used, last = dict.fromkeys(ids, 0.0), dict.fromkeys(ids)
    if ids:
        for cid, state, n, h, t in conn.execute(
                sa.select(i.c.campaign_id, i.c.state, sa.func.count(), sa.func.sum(i.c.core_h_used),
                          sa.func.max(i.c.updated_at)).where(i.c.campaign_id.in_(ids))
                .group_by(i.c.campaign_id, i.c.state)).all():
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
