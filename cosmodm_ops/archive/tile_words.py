"""Each tile's current coadd products as one string of words, kept by registration (the tiles page's sky map).

A word is a kind letter and a band: ``C`` coadd, ``K`` coadd catalogue, ``H`` homogenised coadd (``Cr Kr Hr Cg``).
The tiles page derives each band's none / partial / done status from them; aggregating the coadd products of a
survey's 1000 tiles on every request was 5 ms of SQL (SQLite and PostgreSQL alike). A product is never deleted
and a revision or a new version replaces a product of the same kind, band and tile, so the words change only
when a product is stored: :func:`refresh` recomputes the stored tiles' rows in the storing transaction
(PostgreSQL: under a per-tile advisory lock, so two bands of a tile registered at once both count).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cosmodm_ops.archive import schema as S
from cosmodm_ops.archive.db import lock_keys

__all__ = ["WORD_KINDS", "refresh", "words_select"]

#: product kinds that make words, and their letters
WORD_KINDS = {"coadd": "C", "coadd_catalog": "K", "coadd_homog": "H"}


def words_select() -> Any:
    """``(survey, tile, words)`` of every tile with current coadd products (the migration fills from it)."""
    return _words().group_by(S.products.c.survey, S.products.c.tile)


def _words() -> Any:
    p = S.products
    word = sa.case(*((p.c.kind == k, v) for k, v in WORD_KINDS.items())) + p.c.band
    return sa.select(p.c.survey, p.c.tile, sa.func.aggregate_strings(word, " ").label("words")).where(
        p.c.stage == "coadd", p.c.state == "current", p.c.kind.in_(tuple(WORD_KINDS)), p.c.tile.isnot(None),
        p.c.survey.isnot(None))


@lru_cache(maxsize=1)
def _tile_stmts() -> dict[str, Any]:
    p, tw = S.products, S.tile_words
    survey, tile = sa.bindparam("survey"), sa.bindparam("tile")
    one = _words().where(p.c.survey == survey, p.c.tile == tile).group_by(p.c.survey, p.c.tile)
    return {"delete": sa.delete(tw).where(tw.c.survey == survey, tw.c.tile == tile),
            "insert": sa.insert(tw).from_select(["survey", "tile", "words"], one)}


def refresh(conn: Connection, rows: Iterable[dict[str, Any]]) -> None:
    """Recompute the words of the tiles of stored product ``rows`` (dicts with ``stage``, ``kind``, ``survey``,
    ``tile``) that make words; call in the transaction that stored them, after any superseding."""
    pairs = sorted({(r["survey"], r["tile"]) for r in rows if r.get("stage") == "coadd"
                    and r.get("kind") in WORD_KINDS and r.get("tile") and r.get("survey")})
    if not pairs:
        return
    lock_keys(conn, [f"cosmodm-tile-words:{s}:{t}" for s, t in pairs])
    st = _tile_stmts()
    for survey, tile in pairs:
        conn.execute(st["delete"], {"survey": survey, "tile": tile})
        conn.execute(st["insert"], {"survey": survey, "tile": tile})
