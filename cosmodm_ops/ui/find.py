"""The survey pages' finding: the search box (product tags, an exposure number, a tile name, a sha256) and the
cone search's exposures and tiles (an RA/Dec box, then the exact distance).

Split from :mod:`cosmodm_ops.ui.queries` (same conventions: SQLAlchemy Core, bound parameters only, plain dicts;
statements a page runs on every request built once per shape).
"""

from __future__ import annotations

import math
import re
from functools import lru_cache
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cosmodm_ops.archive import schema as S
from cosmodm_ops.archive.catalogs import angular_distance

__all__ = ["search", "sky_objects"]

p, e = S.products, S.exposures


_TAG_TERM = re.compile(r"^(survey|camera|stage|version|kind|night|expnum|ccd|band|tile)[=:](\S+)$")


def search(conn: Connection, text: str, *, limit: int = 100) -> dict[str, Any]:
    """The search box: ``key=value`` product tags, an exposure number, a tile name or a sha256.

    Returns ``{"exposures": [...], "tiles": [...], "products": [...]}`` (at most ``limit`` each).
    """
    terms = text.split()[:10]
    out: dict[str, list[dict[str, Any]]] = {"exposures": [], "tiles": [], "products": []}
    tags: dict[str, Any] = {}
    for term in terms:
        m = _TAG_TERM.match(term)
        if m:
            key, val = m.group(1), m.group(2)
            tags[key] = int(val) if key in ("expnum", "ccd") and val.isdigit() else val
        elif term.isdigit():
            out["exposures"] += [dict(x) for x in conn.execute(sa.select(e).where(e.c.expnum == int(term))
                                                                .limit(limit)).mappings().all()]
        elif re.fullmatch(r"[0-9a-fA-F]{64}", term):
            out["products"] += [dict(x) for x in conn.execute(sa.select(p).where(p.c.sha256 == term.lower())
                                                               .limit(limit)).mappings().all()]
        else:
            out["tiles"] += [dict(x) for x in conn.execute(sa.select(S.tiles).where(S.tiles.c.name == term)
                                                            .limit(limit)).mappings().all()]
            if not tags:
                tags["tile"] = term
    if tags:
        cond = [p.c[k] == v for k, v in tags.items()]
        out["products"] += [dict(x) for x in conn.execute(sa.select(p).where(*cond, p.c.state == "current")
                                                           .order_by(p.c.id).limit(limit)).mappings().all()]
    return out


def sky_objects(conn: Connection, *, ra: float, dec: float, radius: float, survey: str | None = None,
                limit: int = 200) -> dict[str, Any]:
    """Exposures and tiles whose centres lie within ``radius`` degrees (a box, then the exact distance)."""
    cosd = max(math.cos(math.radians(dec)), 1e-6)
    dra = min(180.0, radius / cosd)
    out: dict[str, list[dict[str, Any]]] = {}
    lo, hi = ra - dra, ra + dra
    shape = (dra < 180.0, lo < 0, hi >= 360, bool(survey))
    arg = {"dlo": dec - radius, "dhi": dec + radius, "lo": lo, "hi": hi, "lo_w": lo + 360.0, "hi_w": hi - 360.0,
           "survey": survey, "limit": 20 * limit}
    for name in ("exposures", "tiles"):
        rows = [dict(x) for x in conn.execute(_box_stmt(name, *shape), arg).mappings().all()]
        dist = angular_distance(np.array([x["ra"] for x in rows], dtype=float),  # None (no centre): NaN, dropped
                                np.array([x["dec"] for x in rows], dtype=float), ra, dec)
        rows = [{**x, "dist": float(d)} for x, d in zip(rows, dist, strict=True) if d <= radius]
        out[name] = sorted(rows, key=lambda x: x["dist"])[:limit]
    return out


@lru_cache(maxsize=32)
def _box_stmt(name: str, bounded_ra: bool, wraps_low: bool, wraps_high: bool, by_survey: bool) -> Any:
    """Exposures or tiles with centres in an RA/Dec box, for one shape of box (bound ``dlo``, ``dhi``, ``lo``,
    ``hi``, ``lo_w``, ``hi_w`` (the RA bounds wrapped past 0 / 360), ``survey``, ``limit``); built once."""
    table, key = (e, "expnum") if name == "exposures" else (S.tiles, "name")
    cond = [table.c.dec.between(sa.bindparam("dlo"), sa.bindparam("dhi"))]
    if bounded_ra:
        ra_cond = table.c.ra.between(sa.bindparam("lo"), sa.bindparam("hi"))
        if wraps_low:
            ra_cond = sa.or_(ra_cond, table.c.ra >= sa.bindparam("lo_w"))
        if wraps_high:
            ra_cond = sa.or_(ra_cond, table.c.ra <= sa.bindparam("hi_w"))
        cond.append(ra_cond)
    if by_survey:
        cond.append(table.c.survey == sa.bindparam("survey"))
    return sa.select(table).where(*cond).order_by(table.c[key]).limit(sa.bindparam("limit"))
