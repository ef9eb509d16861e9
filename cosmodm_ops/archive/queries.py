"""Reading the archive: product lookup, find by tags, lineage and stale walks, cone search, counts.

Nothing here writes. Whole queries take the :class:`~cosmodm_ops.archive.db.Database` and
open one transaction each; :func:`product_row` works inside a caller's transaction (the QA and
quarantine writes look products up with it). Lineage and stale walks are one recursive CTE
each, the same SQL on PostgreSQL and SQLite. Answers are typed rows (:mod:`.rows`).
"""

from __future__ import annotations

import math
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cosmodm_ops.archive import schema as S
from cosmodm_ops.archive.catalogs import angular_distance, cone_ranges
from cosmodm_ops.archive.db import Database, chunks
from cosmodm_ops.archive.errors import ArchiveInputError, ProductNotFound
from cosmodm_ops.archive.rows import ConeRow, Counts, LineageEdge, LineageGraph, ProductRow, StaleRow

__all__ = ["cone", "counts", "find", "lineage", "product", "product_row", "stale"]

_STALE_SQL = """
WITH RECURSIVE walk(id, depth, origin) AS (
    SELECT id, 0, id FROM products WHERE {seed}
    UNION
    SELECT l.product_id, w.depth + 1, w.origin
    FROM lineage l JOIN walk w ON l.input_product_id = w.id
    WHERE w.depth < 64
)
SELECT id, MIN(depth) AS depth, MIN(origin) AS from_id FROM walk WHERE depth > 0 GROUP BY id
"""


def product_row(conn: Connection, root: Path, spec: int | str) -> ProductRow:
    """The product for an id, archive path (relative to ``root`` or absolute) or sha256, in ``conn``.

    Several rows can share a sha256 (the same bytes filed under two tags): the current one,
    then the oldest, wins. Raises :class:`ProductNotFound` when none matches.
    """
    p = S.products
    text = str(spec).strip()
    if isinstance(spec, int) or text.isdigit():
        cond = p.c.id == int(text)
    elif len(text) == 64 and all(c in "0123456789abcdef" for c in text.lower()):
        cond = p.c.sha256 == text.lower()
    else:
        rel = text
        if os.path.isabs(text):
            try:
                rel = Path(text).resolve().relative_to(root).as_posix()
            except ValueError as err:
                msg = f"{text}: not under the archive root {root}"
                raise ProductNotFound(msg) from err
        cond = p.c.path == rel
    rows = conn.execute(sa.select(p).where(cond).order_by(p.c.state, p.c.id)).mappings().all()
    if not rows:
        msg = f"no product with id, archive path or sha256 {text!r} (look it up with 'cosmodm archive find')"
        raise ProductNotFound(msg)
    return ProductRow.from_mapping(rows[0])


def product(db: Database, root: Path, spec: int | str) -> ProductRow:
    """:func:`product_row` in a transaction of its own."""
    with db.transaction(read=True) as conn:
        return product_row(conn, root, spec)


def find(db: Database, *, include_superseded: bool = False, limit: int | None = None,
         **tags: Any) -> list[ProductRow]:
    """Products whose columns equal every given (not None) tag, in night/exposure/tile/band/ccd/kind order.

    ``tags``: any of ``survey``, ``night``, ``expnum``, ``ccd``, ``tile``, ``band``, ``kind``,
    ``version``, ``stage``. Current revisions only unless ``include_superseded``.
    """
    p = S.products
    q = sa.select(p).where(*[p.c[k] == v for k, v in tags.items() if v is not None])
    if not include_superseded:
        q = q.where(p.c.state == "current")
    q = q.order_by(p.c.night, p.c.expnum, p.c.tile, p.c.band, p.c.ccd, p.c.kind, p.c.revision)
    if limit:
        q = q.limit(limit)
    with db.transaction(read=True) as conn:
        return [ProductRow.from_mapping(r) for r in conn.execute(q).mappings()]


def _products_by_id(conn: Connection, ids: list[int], *, current_only: bool = False) -> list[ProductRow]:
    out = []
    for part in chunks(ids):
        out += [ProductRow.from_mapping(r) for r in conn.execute(_by_id_stmt(current_only), {"ids": part}).mappings()]
    return out


@lru_cache(maxsize=2)
def _by_id_stmt(current_only: bool) -> Any:
    """Products by id (expanding ``ids``), built once: the UI's lineage walks call it on every page."""
    p = S.products
    q = sa.select(p).where(p.c.id.in_(sa.bindparam("ids", expanding=True)))
    return q.where(p.c.state == "current") if current_only else q


def lineage_depth(direction: str, depth: int | None) -> int:
    """Check a lineage walk's arguments; the depth to walk (default 64)."""
    if direction not in ("up", "down"):
        msg = f"direction must be 'up' or 'down', got {direction!r}"
        raise ArchiveInputError(msg)
    depth = 64 if depth is None else int(depth)
    if depth < 1:
        msg = f"depth must be >= 1, got {depth}"
        raise ArchiveInputError(msg)
    return depth


def lineage(db: Database, root: Path, spec: int | str, *, direction: str = "up",
            depth: int | None = None) -> LineageGraph:
    """The lineage graph around a product (see :meth:`Archive.lineage <cosmodm_ops.archive.api.Archive.lineage>`)."""
    depth = lineage_depth(direction, depth)
    with db.transaction(read=True) as conn:
        start = product_row(conn, root, spec)
        edges = _walk(conn, start.id, direction, depth)
        ids = sorted({i for e in edges for i in (e.product_id, e.input_id) if i is not None})
        prods = {int(r.id): r for r in _products_by_id(conn, ids)}
    edges.sort(key=lambda e: (e.depth, e.product_id, e.role, e.input_id or 0))
    return LineageGraph(product=start, direction=direction, edges=edges, products=prods)


def _walk(conn: Connection, start: int, direction: str, depth: int) -> list[LineageEdge]:
    """The lineage edges within ``depth`` levels of ``start``, breadth first: one indexed query per level.

    Each edge carries the level of its nearer end plus one (the shortest way to it). A recursive CTE
    did the same in one statement, but SQLite built a Bloom filter over all of ``lineage`` for it on
    every call (a full scan, ~10 ms at 10^5 edges) however small the walk.
    """
    key = "input_id" if direction == "up" else "product_id"
    seen, frontier, edges = {start}, [start], []
    for level in range(1, depth + 1):
        found = []
        for part in chunks(sorted(frontier)):
            found += conn.execute(_walk_stmt(direction), {"ids": part}).mappings().all()
        edges += [LineageEdge.from_mapping(r, depth=level) for r in found]
        frontier = sorted({r[key] for r in found if r[key] is not None} - seen)
        seen.update(frontier)
        if not frontier:
            break
    return edges


@lru_cache(maxsize=2)
def _walk_stmt(direction: str) -> Any:
    """One level of :func:`_walk` (expanding ``ids``: the frontier), built once per direction."""
    lin = S.lineage
    near = lin.c.product_id if direction == "up" else lin.c.input_product_id
    return sa.select(lin.c.product_id, lin.c.input_product_id.label("input_id"), lin.c.role, lin.c.input_path,
                     lin.c.input_sha256).where(near.in_(sa.bindparam("ids", expanding=True)))


def stale(db: Database, root: Path, spec: int | str | None = None) -> list[StaleRow]:
    """Current products made, directly or not, from ``spec`` (default: any superseded product)."""
    with db.transaction() as conn:
        if spec is not None:
            sql, params = _STALE_SQL.format(seed="id = :start"), {"start": product_row(conn, root, spec).id}
        else:
            sql, params = _STALE_SQL.format(seed="state = 'superseded'"), {}
        hits = {int(r.id): (int(r.depth), int(r.from_id)) for r in conn.execute(sa.text(sql), params)}
        rows = _products_by_id(conn, sorted(hits), current_only=True)
    out = [StaleRow.from_mapping(r, depth=hits[int(r.id)][0], from_id=hits[int(r.id)][1]) for r in rows]
    return sorted(out, key=lambda r: (r.depth, r.id))


@lru_cache(maxsize=256)
def _hpx_ranges_stmt(n: int) -> Any:
    """Objects in ``n`` HEALPix index ranges (bound ``lo0``, ``hi0``, ...), built once per ``n`` (at most 200)."""
    o = S.objects
    return sa.select(o).where(sa.or_(*[o.c.hpx.between(sa.bindparam(f"lo{i}"), sa.bindparam(f"hi{i}"))
                                       for i in range(n)]))


@lru_cache(maxsize=1)
def _catalog_stmt() -> Any:
    p = S.products
    return sa.select(p.c.id, p.c.path, p.c.state).where(p.c.id.in_(sa.bindparam("ids", expanding=True)))


def counts(db: Database) -> Counts:
    """Row counts of every table of the schema's ``metadata``."""
    with db.transaction(read=True) as conn:
        return Counts({t.name: int(conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one())
                       for t in S.metadata.sorted_tables})


def cone(db: Database, ra: float, dec: float, radius: float, *, current_only: bool = True,
         limit: int | None = None) -> list[ConeRow]:
    """Catalog objects within ``radius`` degrees of (``ra``, ``dec``), nearest first.

    Candidates come from HEALPix ranges (:func:`~cosmodm_ops.archive.catalogs.cone_ranges`);
    the exact great-circle distance then decides.
    """
    try:
        ranges = cone_ranges(float(ra), float(dec), float(radius))
    except ValueError as err:
        raise ArchiveInputError(str(err)) from err
    rows: list[dict[str, Any]] = []
    with db.transaction(read=True) as conn:
        # objects by their HEALPix index first, then their catalogs' rows by id: a join let SQLite's
        # planner scan every product and probe objects by product_id
        for part in chunks(ranges, 200):
            bounds = {f"{end}{i}": v for i, (lo, hi) in enumerate(part) for end, v in (("lo", lo), ("hi", hi))}
            rows += [dict(r) for r in conn.execute(_hpx_ranges_stmt(len(part)), bounds).mappings().all()]
        cats: dict[int, tuple[str, str]] = {}
        for part in chunks(sorted({r["product_id"] for r in rows})):
            cats.update((int(i), (path, state)) for i, path, state in conn.execute(_catalog_stmt(), {"ids": part}))
    rows = [{**r, "path": cats[r["product_id"]][0]} for r in rows
            if r["product_id"] in cats and (not current_only or cats[r["product_id"]][1] == "current")]
    if not rows:
        return []
    d = angular_distance(np.array([r["ra"] for r in rows]), np.array([r["dec"] for r in rows]), ra, dec)
    keep = np.nonzero(d <= radius)[0]
    keep = keep[np.argsort(d[keep], kind="stable")]
    out = []
    for i in keep[:limit] if limit else keep:
        r = rows[int(i)]
        for k, v in r.items():  # COPY keeps NaN, INSERT (SQLite) stores NULL: answer None on both
            if isinstance(v, float) and not math.isfinite(v):
                r[k] = None
        out.append(ConeRow.from_mapping(r, dist=float(d[i])))
    return out
