"""Keyset pages (no OFFSET) of the survey pages' long lists, and the products list.

A page is read from an indexed key past ``after`` (the next page) or, walking back, before
``before`` (the previous page); :func:`pager` says where the page sits (its number, the keys that
open the next and the previous page). Campaigns, campaign items and products page this way; the
nights page the same way on the night (:func:`cosmodm_ops.ui.queries.nights`).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cosmodm_ops.archive import schema as S

__all__ = ["PRODUCT_TAGS", "keyset", "pager", "products_page"]

#: the tags the products list filters on (each an indexed or a low-cardinality column of ``products``)
PRODUCT_TAGS = ("survey", "camera", "stage", "version", "kind", "night", "expnum", "ccd", "band", "tile")


def keyset(q: Any, col: Any, *, after: Any, before: Any, per_page: Any, desc: bool) -> Any:
    """One page of ``q`` by ``col`` (no OFFSET): rows past ``after`` (or, walking back, before ``before``).

    ``after``, ``before`` (None: not given) and ``per_page`` are values, or ``sa.bindparam`` for a statement
    built once and executed with their values."""
    if before is not None:  # the page before: read backwards from ``before``, then restore the order
        q = q.where(col > before if desc else col < before).order_by(col.asc() if desc else col.desc())
    else:
        if after is not None:
            q = q.where(col < after if desc else col > after)
        q = q.order_by(col.desc() if desc else col.asc())
    return q.limit(per_page)


def pager(conn: Connection, base: Any, col: Any, ids: list[int], total: int, *, per_page: int,
          desc: bool, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Where a keyset page sits: its number, and the ids that open the next and the previous page.

    ``params``: the values of ``base``'s bound parameters (a statement built once with ``sa.bindparam``).
    """
    if not ids:
        return {"page": 1, "pages": max(1, -(-total // per_page)), "next_after": None, "prev_before": None}
    ahead = conn.execute(_ahead_stmt(base, col, desc), {**(params or {}), "first": ids[0]}).scalar() or 0
    return {"page": ahead // per_page + 1, "pages": max(1, -(-total // per_page)),
            "next_after": ids[-1] if ahead + len(ids) < total else None, "prev_before": ids[0] if ahead else None}


@lru_cache(maxsize=64)
def _ahead_stmt(base: Any, col: Any, desc: bool) -> Any:
    """How many rows of ``base`` come before the page's first key (bound ``first``); built once per statement
    that its caller built once (a statement built per call only passes through)."""
    first = sa.bindparam("first")
    return sa.select(sa.func.count()).select_from(base.where(col > first if desc else col < first).subquery())


def products_page(conn: Connection, *, after: int | None = None, before: int | None = None, per_page: int = 200,
                  **tags: Any) -> dict[str, Any]:
    """One page of current products matching every given (not None) tag, by id (keyset: ``after``/``before`` an id).

    Returns ``{"rows": [product rows], "total", "page", "pages", "per_page", "next_after", "prev_before"}``.
    """
    p = S.products
    unknown = set(tags) - set(PRODUCT_TAGS)
    if unknown:
        msg = f"products list: unknown tag(s) {sorted(unknown)}; use {', '.join(PRODUCT_TAGS)}"
        raise ValueError(msg)
    cond = [p.c.state == "current", *(p.c[k] == v for k, v in tags.items() if v is not None)]
    total = int(conn.execute(sa.select(sa.func.count()).select_from(p).where(*cond)).scalar() or 0)
    rows = [dict(x) for x in conn.execute(keyset(sa.select(p).where(*cond), p.c.id, after=after, before=before,
                                                 per_page=per_page, desc=False)).mappings()]
    rows.sort(key=lambda x: x["id"])
    return {"rows": rows, "total": total, "per_page": per_page,
            **pager(conn, sa.select(p.c.id).where(*cond), p.c.id, [x["id"] for x in rows], total,
                    per_page=per_page, desc=False)}
