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


def campaigns(conn: Connection, *, page: int = 1, per_page: int = 50) -> dict[str, Any]:
    """One page of campaigns, newest first, with progress, core-hours and ETA."""
    c = C.campaign
    total = conn.execute(sa.select(sa.func.count()).select_from(c)).scalar() or 0
    rows = [dict(x) for x in conn.execute(sa.select(c.c.id, c.c.name, c.c.survey, c.c.stage, c.c.state, c.c.site,
                                                    c.c.target_version, c.c.core_hours_estimated, c.c.created_at,
                                                    c.c.updated_at, c.c.note, c.c.source)
                                          .order_by(c.c.id.desc()).limit(per_page)
                                          .offset((max(1, page) - 1) * per_page)).mappings()]
    return {"rows": [{**r, **campaigns_for(conn, r["id"])} for r in rows],
            "total": int(total), "page": max(1, page), "per_page": per_page}


def campaign_detail(conn: Connection, cid: int, *, state: str | None = None, page: int = 1,
                    per_page: int = 100) -> dict[str, Any] | None:
    """A campaign with its progress, one page of items (``state`` filter: an item state or a group)."""
    c, i = C.campaign, C.campaign_item
    row = conn.execute(sa.select(c).where(c.c.id == cid)).mappings().first()
    if row is None:
        return None
    summary = campaigns_for(conn, cid)
    states = ITEM_GROUPS.get(state or "", (state,) if state else ())
    cond = [i.c.campaign_id == cid] + ([i.c.state.in_(states)] if states else [])
    n = conn.execute(sa.select(sa.func.count()).select_from(i).where(*cond)).scalar() or 0
    items = [dict(x) for x in conn.execute(sa.select(i).where(*cond).order_by(i.c.id).limit(per_page)
                                           .offset((max(1, page) - 1) * per_page)).mappings()]
    failures = [dict(x) for x in conn.execute(sa.select(i.c.item_key, i.c.exit_code, i.c.attempts, i.c.diagnostics,
                                                        i.c.job_id)
                                              .where(i.c.campaign_id == cid, i.c.state == "failed")
                                              .order_by(i.c.id).limit(20)).mappings()]
    for f in failures:
        f["log_tail"] = "\n".join((f["diagnostics"] or "").splitlines()[-15:])
    return {"campaign": {**dict(row), **summary}, "items": items, "n_items": int(n), "state": state,
            "page": max(1, page), "per_page": per_page, "failures": failures,
            "pending_decisions": conn.execute(sa.select(sa.func.count()).select_from(i).where(
                i.c.campaign_id == cid, i.c.qa_verdict == "borderline", i.c.decision.is_(None))).scalar() or 0}


def campaigns_for(conn: Connection, cid: int) -> dict[str, Any]:
    """The progress block of one campaign (as in :func:`campaigns`)."""
    i = C.campaign_item
    row = dict(conn.execute(sa.select(C.campaign.c.id, C.campaign.c.created_at)
                            .where(C.campaign.c.id == cid)).mappings().one())
    counts = dict.fromkeys(ITEM_GROUPS, 0)
    used, last = 0.0, None
    for state, n, h, t in conn.execute(sa.select(i.c.state, sa.func.count(), sa.func.sum(i.c.core_h_used),
                                                 sa.func.max(i.c.updated_at)).where(i.c.campaign_id == cid)
                                       .group_by(i.c.state)):
        counts[_GROUP_OF.get(state, "planned")] += int(n)
        used += float(h or 0.0)
        if state == "done":
            last = t
    out = _progress(row, counts, used, last)
    return {k: out[k] for k in ("counts", "total", "core_hours_used", "eta_s", "pct")}
