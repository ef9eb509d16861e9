"""Filing files as product revisions: checked items, revision numbers, placement, the ``products`` rows.

:mod:`.store` places one file atomically and knows nothing of the database; this module
decides, inside the caller's transaction, what each file becomes: the same bytes under the
same tags are a no-op (a lost file is healed), new bytes are the next revision (placed under
its own name, the older row marked superseded), and lineage edges that waited for these bytes
now point to them. Every file is placed and its folder fsynced before the row that points to
it is inserted, so a killed process leaves at most an unreferenced complete file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from cosmodm_ops.archive import schema as S
from cosmodm_ops.archive import tile_words
from cosmodm_ops.archive.catalogs import ObjectColumns
from cosmodm_ops.archive.db import Database, chunks, lock_keys, now
from cosmodm_ops.archive.errors import ArchiveInputError
from cosmodm_ops.archive.layout import relpath_for, resolve_under, tag_key
from cosmodm_ops.archive.store import fsync_dir, place_file, sha256_file
from cosmodm_ops.model import TagError, Tags

__all__ = ["Item", "StoredProduct", "make_item", "store_file", "store_items", "supersede_by_unit"]

_TAG_COLUMNS = ("survey", "camera", "stage", "version", "kind", "night", "expnum", "ccd", "band", "tile")


@dataclass
class StoredProduct:
    """Result of storing one file: its row id, archive path, revision and what happened."""

    id: int
    path: str
    revision: int
    outcome: str
    """``"new"`` (first revision), ``"revision"`` (superseded an older one) or ``"same"`` (no-op)."""


@dataclass
class Item:
    """A file to store: tags, source path, checksum, size; plus what the manifest says about it."""

    tags: Tags
    src: Path
    sha256: str
    size: int
    manifest_path: str | None = None
    inputs: list[str] | None = None
    catalog: ObjectColumns | None = None


def make_item(tags: Tags | dict[str, Any], src: str | os.PathLike[str], sha256: str | None) -> Item:
    """A checked :class:`Item`: valid tags, an existing file, its sha256 (equal to ``sha256`` if given)."""
    try:
        tags = tags if isinstance(tags, Tags) else Tags.from_dict(dict(tags))
        relpath_for(tags)
    except (TagError, TypeError) as err:
        msg = f"{src}: bad tags: {err}"
        raise ArchiveInputError(msg) from err
    src = Path(src)
    if not src.is_file():
        msg = f"{src}: file not found; nothing registered"
        raise ArchiveInputError(msg)
    actual = sha256_file(src)
    if sha256 is not None and actual != sha256:
        msg = f"{src}: sha256 is {actual}, expected {sha256}; nothing registered"
        raise ArchiveInputError(msg)
    return Item(tags=tags, src=src, sha256=actual, size=src.stat().st_size)


def _existing_rows(conn: Connection, keys: list[str]) -> dict[str, list[Row[Any]]]:
    """Every revision already filed under each key (id, key, revision, sha256, path, state)."""
    p = S.products
    existing: dict[str, list[Row[Any]]] = {}
    for part in chunks(keys):
        rows = conn.execute(sa.select(p.c.id, p.c.key, p.c.revision, p.c.sha256, p.c.path, p.c.state)
                            .where(p.c.key.in_(part))).all()
        for r in rows:
            existing.setdefault(r.key, []).append(r)
    return existing


def _place_revision(root: Path, item: Item, rows: Sequence[Row[Any]]) -> tuple[Path, int]:
    """Place ``item`` as the next free revision of its tags (folder not yet fsynced): (relpath, revision)."""
    revision = max((int(r.revision) for r in rows), default=0) + 1
    while True:
        rel = relpath_for(item.tags, revision)
        outcome = place_file(item.src, resolve_under(root, rel), item.sha256, sync_dir=False)
        if outcome != "taken":  # "taken": a file no row claims (a killed writer's); skip that name
            return rel, revision
        revision += 1


def _insert_revisions(conn: Connection, new_rows: list[dict[str, Any]],
                      had_rows: Sequence[bool]) -> list[StoredProduct]:
    """Insert product rows; mark what they replace superseded; point waiting lineage edges at them."""
    p = S.products
    ids = conn.execute(sa.insert(p).returning(p.c.id, sort_by_parameter_order=True), new_rows).scalars().all()
    stored, supersede = [], []
    for row, pid, had in zip(new_rows, ids, had_rows, strict=True):
        outcome = "revision" if had else "new"
        stored.append(StoredProduct(int(pid), row["path"], row["revision"], outcome))
        if outcome == "revision":
            supersede.append({"new": int(pid), "k": row["key"]})
    if supersede:
        conn.execute(sa.update(p).where(p.c.key == sa.bindparam("k"), p.c.id != sa.bindparam("new"),
                                        p.c.state == "current")
                     .values(state="superseded", superseded_by=sa.bindparam("new")), supersede)
    tile_words.refresh(conn, new_rows)
    # lineage edges recorded before their input was archived now point to it
    lin = S.lineage
    for part in chunks(sorted({r["sha256"] for r in new_rows})):
        sub = sa.select(sa.func.min(p.c.id)).where(p.c.sha256 == lin.c.input_sha256).scalar_subquery()
        conn.execute(sa.update(lin).where(lin.c.input_product_id.is_(None), lin.c.input_sha256.in_(part))
                     .values(input_product_id=sub))
    return stored


def store_items(conn: Connection, root: Path, items: Sequence[Item], run_id: int | None) -> list[StoredProduct]:
    """Place files and insert product rows, inside the caller's transaction; results in ``items`` order."""
    keys = [tag_key(it.tags) for it in items]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        msg = f"the same tags appear more than once in one registration: {dup[:3]}"
        raise ArchiveInputError(msg)
    lock_keys(conn, keys)
    existing = _existing_rows(conn, keys)
    stamp = now()
    results: list[StoredProduct | None] = [None] * len(items)
    new_rows: list[dict[str, Any]] = []
    new_index: list[int] = []
    dirs: set[Path] = set()
    for i, (it, key) in enumerate(zip(items, keys, strict=True)):
        rows = existing.get(key, [])
        current = [r for r in rows if r.state == "current"]
        if current and current[0].sha256 == it.sha256:
            cur = current[0]
            full = resolve_under(root, cur.path)
            if not full.exists():  # heal: the file was lost, the row is right
                place_file(it.src, full, it.sha256)
            results[i] = StoredProduct(int(cur.id), cur.path, int(cur.revision), "same")
            continue
        rel, revision = _place_revision(root, it, rows)
        dirs.add(resolve_under(root, rel).parent)
        d = it.tags.to_dict()
        new_rows.append({**{k: d[k] for k in _TAG_COLUMNS}, "key": key, "revision": revision,
                         "path": rel.as_posix(), "sha256": it.sha256, "size": it.size, "state": "current",
                         "superseded_by": None, "run_id": run_id, "created_at": stamp})
        new_index.append(i)
    for d in sorted(dirs):  # the new names are durable before any row points to them
        fsync_dir(d)
    if new_rows:
        had = [bool(existing.get(r["key"])) for r in new_rows]
        for i, st in zip(new_index, _insert_revisions(conn, new_rows, had), strict=True):
            results[i] = st
    return [r for r in results if r is not None]


def store_file(db: Database, root: Path, src: str | os.PathLike[str], tags: Tags | dict[str, Any], *,
               sha256: str | None = None) -> StoredProduct:
    """Store one file under its tags (no lineage), in a transaction of its own. Same tags and bytes: a no-op."""
    item = make_item(tags, src, sha256)
    with db.transaction() as conn:
        return store_items(conn, root, [item], None)[0]


def supersede_by_unit(db: Database, replaces: Sequence[int], new_ids: Sequence[int], keep_version: str) -> int:
    """Mark current products of ``replaces`` whose version is not ``keep_version`` superseded by the product of
    ``new_ids`` for the same unit (kind, night, expnum, ccd, band, tile); returns how many were marked.

    A new revision under the same tags supersedes its predecessor as it is stored; a product filed under a
    new pipeline version has other tags, so a reprocessing campaign closes the old version's rows here.
    """
    p = S.products
    unit = (p.c.kind, p.c.night, p.c.expnum, p.c.ccd, p.c.band, p.c.tile)
    with db.transaction() as conn:
        new = {tuple(r[1:]): int(r[0]) for r in conn.execute(sa.select(p.c.id, *unit).where(p.c.id.in_(new_ids)))}
        n = 0
        for r in conn.execute(sa.select(p.c.id, *unit).where(p.c.id.in_(replaces), p.c.state == "current",
                                                             p.c.version != keep_version)).all():
            by = new.get(tuple(r[1:]))
            if by is not None:
                conn.execute(sa.update(p).where(p.c.id == int(r[0])).values(state="superseded", superseded_by=by))
                n += 1
    return n
