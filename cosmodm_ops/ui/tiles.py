"""The tiles pages' read side: every tile's coadd status per band (the sky map) and one tile's detail.

Split from :mod:`cosmodm_ops.ui.queries` (same conventions: SQLAlchemy Core, bound parameters only, plain dicts).

Tile status, per band: ``failed`` (an active quarantine on the tile+band or its coadd), ``stale`` (the coadd
was made from a product that has since been superseded), ``done`` (coadd and catalog), ``partial`` (some coadd
products), ``none``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cosmodm_ops.archive import schema as S
from cosmodm_ops.ui.queries import reasons_by_key

__all__ = ["TILE_CODES", "TILE_STATES", "tile_detail", "tile_states", "tiles_status"]

p, q, qa, lin = S.products, S.quarantine, S.qa_results, S.lineage
TILE_STATES = ("none", "partial", "done", "stale", "failed")
#: one letter per state, as :func:`tiles_status` ships a tile's status (a letter per band)
TILE_CODES = {s[0]: s for s in TILE_STATES}


def tiles_status(conn: Connection, *, survey: str) -> dict[str, Any]:
    """Every tile of a survey with its coadd status per band (see the module docstring).

    Returns ``{"tiles": [{"name", "ra", "dec", "status"}], "bands": [...], "codes": {letter: state}}``
    with ``status`` one letter per band of ``bands`` (``TILE_CODES``: ``n`` none, ``p`` partial, ``d``
    done, ``s`` stale, ``f`` failed). The coadd products come as one row of words per tile
    (``tile_words``, migration ``0009_tile_words``); the none/partial/done letters are worked out
    once per distinct aggregate (a survey's tiles share a few), then the few stale and failed marked.
    """
    st, arg = _status_stmts(), {"survey": survey}
    tiles = conn.execute(st["tiles"], arg).all()
    words_of = dict(conn.execute(st["words"], arg).all())
    kinds = {w: _kinds_per_band(w) for w in set(words_of.values())}
    bands = sorted({b for per in kinds.values() for b in per if b != "det"})
    letters = {w: "".join(("d" if "C" in per[b] and "K" in per[b] else "p") if b in per else "n" for b in bands)
               for w, per in kinds.items()}
    none = "n" * len(bands)
    out = [{"name": name, "ra": ra, "dec": dec, "status": letters[words_of[name]] if name in words_of else none}
           for name, ra, dec in tiles]
    _mark_stale_and_failed(conn, survey, out, bands)
    return {"tiles": out, "bands": bands, "codes": TILE_CODES}


@lru_cache(maxsize=1)
def _status_stmts() -> dict[str, Any]:
    """The statements of :func:`tiles_status`, built once (bound parameter ``survey``): the tiles; one row per
    tile with its coadd products as "<C|K|H><band>" words (coadd, catalog, homogenised coadd: ``tile_words``,
    kept by registration, :mod:`cosmodm_ops.archive.tile_words`); stale coadds walked from the (few) superseded products forwards, not from every coadd backwards;
    the quarantined tiles and coadds."""
    t, tw, survey = S.tiles, S.tile_words, sa.bindparam("survey")
    made_from = sa.select(lin.c.product_id).where(lin.c.input_product_id.in_(
        sa.select(p.c.id).where(p.c.state == "superseded")))
    return {
        "tiles": sa.select(t.c.name, t.c.ra, t.c.dec).where(t.c.survey == survey).order_by(t.c.name),
        "words": sa.select(tw.c.tile, tw.c.words).where(tw.c.survey == survey),
        "stale": sa.select(p.c.tile, p.c.band).where(
            p.c.id.in_(made_from), p.c.stage == "coadd", p.c.state == "current", p.c.survey == survey).distinct(),
        "failed_tiles": sa.select(q.c.tile, q.c.band).where(
            q.c.tile.isnot(None), q.c.released == 0, sa.or_(q.c.survey.is_(None), q.c.survey == survey)),
        "failed_coadds": sa.select(p.c.tile, p.c.band).join(q, q.c.product_id == p.c.id).where(
            p.c.stage == "coadd", p.c.survey == survey, p.c.state == "current", q.c.released == 0),
    }


def _kinds_per_band(words: str | None) -> dict[str, str]:
    per: dict[str, str] = {}
    for w in (words or "").split(" "):
        if len(w) > 1:
            per[w[1:]] = per.get(w[1:], "") + w[0]
    return per


def _mark_stale_and_failed(conn: Connection, survey: str, tiles: list[dict[str, Any]], bands: list[str]) -> None:
    """Set ``s`` (stale) and then ``f`` (failed) letters in place: few rows, read from the superseded side."""
    st, arg = _status_stmts(), {"survey": survey}
    marks: dict[str, dict[str, str]] = defaultdict(dict)
    for tile, band in conn.execute(st["stale"], arg).all():
        marks[tile][band] = "s"
    failed = set(conn.execute(st["failed_tiles"], arg).all()) | set(conn.execute(st["failed_coadds"], arg).all())
    for tile, band in failed:  # a quarantine without a band covers the whole tile
        marks[tile].update(dict.fromkeys(bands, "f") if band is None else {band: "f"})
    if not marks:
        return
    col = {b: i for i, b in enumerate(bands)}
    for row in tiles:
        if row["name"] in marks:
            st = list(row["status"])
            for band, letter in marks[row["name"]].items():
                if band in col:
                    st[col[band]] = letter
            row["status"] = "".join(st)


def tile_states(tile: dict[str, Any], bands: Sequence[str]) -> dict[str, str]:
    """A tile row of :func:`tiles_status` as ``{band: state}``."""
    return {b: TILE_CODES[c] for b, c in zip(bands, tile["status"], strict=True)}


def tile_detail(conn: Connection, *, survey: str, name: str) -> dict[str, Any] | None:
    """A tile: its row, coadd products per band, QA rows, quarantines and input exposures per band."""
    t = S.tiles
    row = conn.execute(sa.select(t).where(t.c.survey == survey, t.c.name == name)).mappings().first()
    if row is None:
        return None
    prods = [dict(x) for x in conn.execute(sa.select(p).where(
        p.c.survey == survey, p.c.tile == name, p.c.state == "current").order_by(p.c.band, p.c.kind)).mappings().all()]
    qa_rows = [dict(x) for x in conn.execute(sa.select(qa).where(qa.c.tile == name).order_by(qa.c.id)).mappings().all()]
    reasons = reasons_by_key(conn.execute(sa.select(q.c.band, q.c.reasons).where(
        q.c.tile == name, q.c.released == 0)).all())
    coadd_ids = [x["id"] for x in prods if x["kind"] in ("coadd", "coadd_homog")]
    inputs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    if coadd_ids:
        pin, pc = p.alias("pin"), p.alias("pc")
        for band, expnum, night, n in conn.execute(
                sa.select(pc.c.band, pin.c.expnum, pin.c.night, sa.func.count(sa.distinct(pin.c.ccd)))
                .select_from(lin.join(pin, pin.c.id == lin.c.input_product_id).join(pc, pc.c.id == lin.c.product_id))
                .where(lin.c.product_id.in_(coadd_ids), pin.c.kind == "image", pin.c.expnum.isnot(None))
                .group_by(pc.c.band, pin.c.expnum, pin.c.night).order_by(pc.c.band, pin.c.expnum)):
            inputs[band].append({"expnum": expnum, "night": night, "n_ccds": int(n)})
    colour = [x for x in prods if x["kind"] == "pseudocolour"]
    return {"tile": dict(row), "products": prods, "qa": qa_rows, "quarantine": dict(reasons),
            "inputs": dict(inputs), "pseudocolour": max(colour, key=lambda x: x["id"]) if colour else None}
