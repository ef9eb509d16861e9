"""QA results and quarantine records: reading ``qa.json``, recording checks, quarantining, asking why.

A QA row is keyed by its run (re-registering a manifest adds nothing) or, without a run, by
its scope (recording again replaces it). A quarantine record covers a product, or every
product an exposure, CCD or tile selector matches: a record covers a target when every column
the record sets matches the target's. Nothing is ever deleted: a quarantined product stays in
the archive with its reasons.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cosmodm_ops.archive import schema as S
from cosmodm_ops.archive.db import Database, insert_stmt, now
from cosmodm_ops.archive.errors import ArchiveInputError
from cosmodm_ops.archive.layout import tag_key
from cosmodm_ops.archive.queries import product_row
from cosmodm_ops.archive.rows import QARow
from cosmodm_ops.model import Tags

__all__ = ["as_number", "insert_qa", "qa_results", "quarantine", "quarantine_reasons", "read_qa_checks",
           "record_qa"]

Target = Tags | dict[str, Any] | int | str
"""What a quarantine names: full tags, a selector dict, or a product id, archive path or sha256."""

_SELECTOR_KEYS = ("survey", "night", "expnum", "ccd", "tile", "band", "version")


def as_number(value: Any) -> float | None:
    """``value`` as a finite float, else None (booleans are 0.0 / 1.0)."""
    if isinstance(value, bool):
        return float(value)
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if np.isfinite(out) else None


def read_qa_checks(qa: Any) -> list[dict[str, Any]]:
    """QA checks from a ``qa.json`` document, as ``{"ccd", "name", "value", "threshold", "verdict"}``.

    Accepted shapes (anything else in the document is ignored):

    * ``{"checks": [{"name", "value", "threshold", "verdict"}, ...]}`` -- exposure (or tile) level;
    * ``{"ccds": {"<ccd>": {"checks": [...]}, ...}}`` or ``{"ccds": [{"ccd": N, "checks": [...]}, ...]}``
      -- per CCD (both may be present).

    ``value`` and ``threshold`` are stored as numbers when they are numbers (else NULL);
    ``verdict`` is free text (``pass``, ``fail``, ``warn``...).
    """
    if not isinstance(qa, dict):
        msg = "qa.json: expected a JSON object with 'checks' and/or 'ccds'"
        raise ArchiveInputError(msg)
    out: list[dict[str, Any]] = []

    def take(checks: Any, ccd: int | None, where: str) -> None:
        if not isinstance(checks, list):
            msg = f"qa.json: {where}'checks' must be a list of objects"
            raise ArchiveInputError(msg)
        for i, c in enumerate(checks):
            if not isinstance(c, dict) or not c.get("name"):
                msg = f"qa.json: {where}checks[{i}] needs at least a 'name'"
                raise ArchiveInputError(msg)
            out.append({"ccd": ccd, "name": str(c["name"]), "value": as_number(c.get("value")),
                        "threshold": as_number(c.get("threshold")), "verdict": str(c.get("verdict", "unknown"))})

    if "checks" in qa:
        take(qa["checks"], None, "")
    ccds = qa.get("ccds")
    items: Iterable[tuple[Any, Any]] = []
    if isinstance(ccds, dict):
        items = ccds.items()
    elif isinstance(ccds, list):
        items = ((c.get("ccd") if isinstance(c, dict) else None, c) for c in ccds)
    for ccd, block in items:
        if isinstance(block, dict) and "checks" in block:
            try:
                ccd_num = int(ccd)
            except (TypeError, ValueError) as err:
                msg = f"qa.json: per-CCD block with ccd={ccd!r} is not an integer CCD number"
                raise ArchiveInputError(msg) from err
            take(block["checks"], ccd_num, f"ccds[{ccd_num}].")
    return out


def insert_qa(conn: Connection, checks: Sequence[dict[str, Any]], *, run_id: int | None,
               tags: dict[str, Any], product_id: int | None = None) -> int:
    """Insert QA rows inside ``conn``'s transaction, scoped by ``product_id``, CCD, tile or exposure.

    ``tags`` gives the survey, exposure, CCD, tile and band columns (a check's own ``ccd``
    wins). With a ``run_id`` a repeated (run, scope, check) is skipped; without one it
    replaces the earlier result of its scope. Returns the number of checks given.
    """
    rows = []
    for c in checks:
        ccd = c.get("ccd", tags.get("ccd"))
        scope = (f"product{product_id}" if product_id is not None else
                 f"ccd{ccd}" if ccd is not None else "tile" if tags.get("tile") else "exposure")
        rows.append({"run_id": run_id, "product_id": product_id, "survey": tags.get("survey"),
                     "expnum": tags.get("expnum"), "ccd": ccd, "tile": tags.get("tile"),
                     "band": tags.get("band"), "scope": scope, "check_name": str(c["name"]),
                     "value": as_number(c.get("value")), "threshold": as_number(c.get("threshold")),
                     "verdict": str(c.get("verdict", "unknown")), "created_at": now()})
    if not rows:
        return 0
    if run_id is None:  # no run to key on: replace this scope's earlier results
        for r in rows:
            conn.execute(sa.delete(S.qa_results).where(
                S.qa_results.c.run_id.is_(None), S.qa_results.c.scope == r["scope"],
                S.qa_results.c.check_name == r["check_name"],
                S.qa_results.c.expnum == r["expnum"] if r["expnum"] is not None else sa.true(),
                S.qa_results.c.tile == r["tile"] if r["tile"] is not None else sa.true()))
        conn.execute(sa.insert(S.qa_results), rows)
    else:
        conn.execute(insert_stmt(conn, S.qa_results).on_conflict_do_nothing(
            index_elements=["run_id", "scope", "check_name"]), rows)
    return len(rows)


def _selector(conn: Connection, root: Path, target: Target) -> dict[str, Any]:
    """The quarantine columns (``_SELECTOR_KEYS`` and ``product_id``) a target names."""
    if isinstance(target, Tags):  # full tags name a product: its product-level records count too
        pid = conn.execute(sa.select(S.products.c.id).where(S.products.c.key == tag_key(target),
                                                            S.products.c.state == "current")).scalar()
        return {**{k: getattr(target, k) for k in _SELECTOR_KEYS},
                "product_id": pid}
    if isinstance(target, dict):
        unknown = set(target) - {"survey", "night", "expnum", "ccd", "tile", "band", "version", "camera",
                                 "stage", "kind"}
        if unknown:
            msg = f"unknown quarantine selector key(s) {sorted(unknown)}"
            raise ArchiveInputError(msg)
        sel = {k: target.get(k) for k in _SELECTOR_KEYS}
        if all(v is None for v in sel.values()):
            msg = "a quarantine selector needs at least one of survey, night, expnum, ccd, tile, band, version"
            raise ArchiveInputError(msg)
        return {**sel, "product_id": None}
    row = product_row(conn, root, target)
    return {**{k: row[k] for k in _SELECTOR_KEYS},
            "product_id": row["id"]}


def record_qa(db: Database, root: Path, checks: Sequence[dict[str, Any]] | dict[str, Any], *,
              tags: Tags | dict[str, Any] | None = None, product: int | str | None = None,
              run_id: int | None = None) -> int:
    """Record QA checks (``{"name", "value", "threshold", "verdict"[, "ccd"]}`` or a qa.json document).

    Scope them with ``tags`` (an exposure, CCD or tile; partial tags as a dict are fine) or a
    ``product`` (id, path or sha256). Returns the number of rows written.
    """
    if isinstance(checks, dict):
        checks = read_qa_checks(checks)
    tag_dict = tags.to_dict() if isinstance(tags, Tags) else dict(tags or {})
    with db.transaction() as conn:
        pid = None
        if product is not None:
            row = product_row(conn, root, product)
            pid = row["id"]
            for k in ("survey", "expnum", "ccd", "tile", "band"):
                tag_dict.setdefault(k, row[k])
        return insert_qa(conn, checks, run_id=run_id, tags=tag_dict, product_id=pid)


def qa_results(db: Database, **filters: Any) -> list[QARow]:
    """QA rows, filtered by any of its columns (``expnum``, ``ccd``, ``tile``, ``check_name``, ...)."""
    q = S.qa_results
    where = [q.c[k] == v for k, v in filters.items() if v is not None]
    with db.transaction() as conn:
        return [QARow.from_mapping(r) for r in conn.execute(sa.select(q).where(*where).order_by(q.c.id)).mappings()]


def quarantine(db: Database, root: Path, target: Target, reasons: Sequence[str] | str) -> int:
    """Quarantine ``target`` with ``reasons``; the record id (an equal active record is reused).

    What a target covers: see :meth:`Archive.quarantine <cosmodm_ops.archive.api.Archive.quarantine>`.
    """
    if isinstance(reasons, str):
        reasons = [reasons]
    reasons = [str(r) for r in reasons]
    if not reasons:
        msg = "quarantine needs at least one reason"
        raise ArchiveInputError(msg)
    text = json.dumps(reasons)
    with db.transaction() as conn:
        sel = _selector(conn, root, target)
        q = S.quarantine
        where = [q.c.reasons == text, q.c.released == 0]
        where += [(q.c[k] == v) if v is not None else q.c[k].is_(None) for k, v in sel.items()]
        found = conn.execute(sa.select(q.c.id).where(*where)).scalar()
        if found is not None:
            return int(found)
        return int(conn.execute(sa.insert(q).values(**sel, reasons=text, released=0, created_at=now())
                                .returning(q.c.id)).scalar_one())


def quarantine_reasons(db: Database, root: Path, target: Target) -> list[str]:
    """Reasons of every active quarantine record covering ``target`` (empty: not quarantined)."""
    with db.transaction() as conn:
        sel = _selector(conn, root, target)
        q = S.quarantine
        cond = [q.c.released == 0]
        for k in _SELECTOR_KEYS:
            v = sel.get(k)
            cond.append(q.c[k].is_(None) if v is None else sa.or_(q.c[k].is_(None), q.c[k] == v))
        any_scope = sa.or_(q.c.product_id.is_(None), q.c.product_id == sel["product_id"]) \
            if sel["product_id"] is not None else q.c.product_id.is_(None)
        out: list[str] = []
        for (text,) in conn.execute(sa.select(q.c.reasons).where(*cond, any_scope).order_by(q.c.id)):
            out += [r for r in json.loads(text) if r not in out]
        return out

