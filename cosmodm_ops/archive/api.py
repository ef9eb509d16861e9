"""The archive: files under a root, filed by tags, and the lineage database beside them.

``Archive(db_url, root)`` is what the CLI and the Airflow layer use. Every write is one
database transaction, and every file is placed (atomically, checksummed) before the
row that points to it is inserted, inside that transaction: a killed process leaves at
most an unreferenced complete file, never a row pointing to a missing file.

Concurrency: on PostgreSQL each transaction takes a transaction-scoped advisory lock per
product key (in sorted order, so two registrations never deadlock) before it reads the
current revision; on SQLite every transaction is ``BEGIN IMMEDIATE``. Registering the same
product from several processes at once therefore leaves one row.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from contextlib import AbstractContextManager
from functools import cached_property
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from cosmodm_ops.archive import qa, queries
from cosmodm_ops.archive import schema as S
from cosmodm_ops.archive import verify as verify_mod
from cosmodm_ops.archive.catalogs import read_ldac_objects
from cosmodm_ops.archive.db import Database, insert_stmt, now, upgrade, upsert_id
from cosmodm_ops.archive.errors import ArchiveInputError
from cosmodm_ops.archive.layout import relpath_for, resolve_under, tag_key
from cosmodm_ops.archive.objects import copy_objects, insert_objects, load_objects
from cosmodm_ops.archive.qa import read_qa_checks
from cosmodm_ops.archive.rows import ConeRow, Counts, LineageGraph, ProductRow, QARow, StaleRow
from cosmodm_ops.archive.storage import Item, StoredProduct, make_item, store_items
from cosmodm_ops.archive.store import sha256_file
from cosmodm_ops.archive.verify import VerifyReport
from cosmodm_ops.model import ProductKind, Stage, TagError, Tags

__all__ = ["Archive", "StoredProduct", "VerifyReport", "copy_objects", "insert_objects", "read_qa_checks"]

log = logging.getLogger(__name__)

_CATALOG_KINDS = {ProductKind.CATALOG.value, ProductKind.COADD_CATALOG.value}
_PRODUCT_COLS = ("id", "key", "revision", "survey", "camera", "stage", "version", "kind", "night", "expnum",
                 "ccd", "band", "tile", "path", "sha256", "size", "state", "superseded_by", "run_id", "created_at")


class Archive:
    """The archive: a root folder of products and the database that describes them.

    Parameters
    ----------
    db_url : str
        SQLAlchemy URL: ``postgresql+psycopg2://user@host/db`` in production, ``sqlite:///path.db``
        for the embedded default.
    root : str or Path
        Archive root folder (created by :meth:`init`).
    """

    def __init__(self, db_url: str, root: str | os.PathLike[str]) -> None:
        self.db_url = str(db_url)
        self.root = Path(root).resolve()

    def __repr__(self) -> str:
        return f"Archive({sa.engine.make_url(self.db_url).render_as_string(hide_password=True)!r}, {str(self.root)!r})"

    # ------------------------------------------------------------------ database plumbing
    @cached_property
    def _db(self) -> Database:
        return Database(self.db_url, repr(self))

    @property
    def engine(self) -> Engine:
        """The SQLAlchemy engine (SQLite: WAL, ``BEGIN IMMEDIATE``; PostgreSQL: pre-ping pool)."""
        return self._db.engine

    @property
    def is_postgres(self) -> bool:
        return self._db.is_postgres

    def _tx(self) -> AbstractContextManager[Connection]:
        """One transaction; database errors translated (unreachable/locked -> ArchiveUnavailable)."""
        return self._db.transaction()

    def init(self) -> str:
        """Create the root folder and bring the database schema to the newest migration.

        Returns the schema revision. Safe to run again (a no-op when up to date).
        """
        self.root.mkdir(parents=True, exist_ok=True)
        with self._tx() as conn:
            return upgrade(conn)

    # ------------------------------------------------------------------ storing
    def store(self, src: str | os.PathLike[str], tags: Tags, *, sha256: str | None = None) -> StoredProduct:
        """Store one file under its tags (no lineage). Same tags and checksum: a no-op."""
        item = make_item(tags, src, sha256)
        with self._tx() as conn:
            return store_items(conn, self.root, [item], None)[0]

    def _exposure_id(self, conn: Connection, tags: Tags, **extra: Any) -> int | None:
        if tags.expnum is None or tags.night is None:
            return None
        values = {"survey": tags.survey, "camera": tags.camera, "night": tags.night, "expnum": tags.expnum,
                  "band": tags.band, "created_at": now(), **extra}
        return upsert_id(conn, S.exposures, values, ("survey", "camera", "expnum"),
                               update=("band", "exptime", "ra", "dec", "raw_product_id"))

    def register_raw(self, path: str | os.PathLike[str], tags: Tags | dict[str, Any], *,
                     sha256: str | None = None, header: dict[str, Any] | None = None) -> int:
        """File a raw exposure and upsert its ``exposures`` row; returns the product id.

        ``tags`` must have stage ``raw``, kind ``raw``, night and expnum. ``header`` may give
        ``EXPTIME``, ``RA``/``DEC`` (degrees) for the exposure row. Re-running is a no-op.
        """
        item = make_item(tags, path, sha256)
        if item.tags.stage is not Stage.RAW or item.tags.kind is not ProductKind.RAW:
            msg = f"{path}: register_raw needs stage 'raw' and kind 'raw' tags, got {tag_key(item.tags)}"
            raise ArchiveInputError(msg)
        header = {str(k).upper(): v for k, v in (header or {}).items()}
        with self._tx() as conn:
            stored = store_items(conn, self.root, [item], None)[0]
            self._exposure_id(conn, item.tags, exptime=qa.as_number(header.get("EXPTIME")), ra=qa.as_number(header.get("RA")),
                              dec=qa.as_number(header.get("DEC")), raw_product_id=stored.id)
        return stored.id

    # ------------------------------------------------------------------ manifests
    def register_manifest(self, path: str | os.PathLike[str], run_info: dict[str, Any] | None = None) -> list[int]:
        """Register everything a job made: files, lineage, the run, QA results and catalog objects.

        Every product file is checked against the manifest's sha256 and size FIRST; any missing
        or different file raises :class:`ArchiveInputError` and nothing is registered. Then, in
        one transaction: the run row (keyed by the manifest's sha256, so re-registering adds
        nothing), the products (atomic copies), lineage edges (each product <- every job input
        with its role, or the subset named by the product's ``inputs``: input roles or paths of
        other products of the same manifest), QA checks of a ``qa.json`` beside the manifest
        (see :func:`read_qa_checks`) and the objects of ``catalog``/``coadd_catalog`` products.

        Parameters
        ----------
        path : path
            The ``manifest.json``.
        run_info : dict, optional
            Orchestration details that override the manifest's ``job``: ``dag_id``, ``run_id``,
            ``task_id``, ``try_number``, ``batch_job_id``, ``site``, ``host``, ``start``, ``end``,
            ``state``, ``exit_code``, ``bytes_read``, ``bytes_written``.

        Returns
        -------
        list of int
            Product ids, in manifest order.
        """
        from cosmodm_ops.manifest import read_manifest

        path = Path(path).resolve()
        try:
            manifest = read_manifest(path)
        except ValueError as err:
            raise ArchiveInputError(str(err)) from err
        folder = path.parent
        problems: list[str] = []
        items: list[Item] = []
        for i, prod in enumerate(manifest.products):
            where = f"{path}: products[{i}] ({prod.path})"
            try:
                tags = prod.tags_obj()
                if tags.kind.value != prod.kind:
                    problems.append(f"{where}: kind {prod.kind!r} differs from tags kind {tags.kind.value!r}")
                    continue
                relpath_for(tags)
            except TagError as err:
                problems.append(f"{where}: bad tags: {err}")
                continue
            try:
                src = resolve_under(folder, prod.path)
            except TagError:
                problems.append(f"{where}: path escapes the manifest folder")
                continue
            if not src.is_file():
                problems.append(f"{where}: file {src} is missing")
                continue
            size = src.stat().st_size
            actual = sha256_file(src)
            if actual != prod.sha256:
                problems.append(f"{where}: sha256 of {src} is {actual}, the manifest says {prod.sha256}")
                continue
            if size != prod.size:
                problems.append(f"{where}: size of {src} is {size}, the manifest says {prod.size}")
                continue
            item = Item(tags=tags, src=src, sha256=actual, size=size, manifest_path=prod.path, inputs=prod.inputs)
            if prod.kind in _CATALOG_KINDS:
                try:
                    item.catalog = read_ldac_objects(src)
                except ValueError as err:
                    problems.append(f"{where}: {err}")
                    continue
            items.append(item)
        roles = {inp.role for inp in manifest.inputs}
        paths = {it.manifest_path for it in items}
        for it in items:
            for name in it.inputs or []:
                if name not in roles and name not in paths:
                    problems.append(f"{path}: product {it.manifest_path}: input {name!r} is neither an input "
                                    f"role ({sorted(roles)}) nor a product path of this manifest")
        qa_checks: list[dict[str, Any]] = []
        qa_path = folder / "qa.json"
        if qa_path.exists():
            try:
                qa_checks = read_qa_checks(json.loads(qa_path.read_text()))
            except json.JSONDecodeError as err:
                problems.append(f"{qa_path}: not valid JSON (line {err.lineno}: {err.msg})")
            except ArchiveInputError as err:
                problems.append(f"{qa_path}: {err}")
        if problems:
            msg = "manifest not registered (nothing was):\n  " + "\n  ".join(problems)
            raise ArchiveInputError(msg)

        run = self._run_values(manifest, path, run_info)
        with self._tx() as conn:
            run_id = upsert_id(conn, S.runs, run, ("run_key",))
            stored = store_items(conn, self.root, items, run_id)
            by_path = {it.manifest_path: (it, st) for it, st in zip(items, stored, strict=True)}
            self._index_products(conn, items, stored)
            self._add_lineage(conn, manifest, items, stored, by_path, run_id)
            if qa_checks:
                qa.insert_qa(conn, qa_checks, run_id=run_id, tags=self._job_tags(manifest, items))
            for it, st in zip(items, stored, strict=True):
                if it.catalog is not None and st.outcome != "same":
                    load_objects(conn, st.id, it.tags, it.catalog)
        return [st.id for st in stored]

    @staticmethod
    def _job_tags(manifest: Any, items: Sequence[Item]) -> dict[str, Any]:
        tags = dict(manifest.tags or {})
        if items:
            first = items[0].tags
            for k in ("survey", "expnum", "tile", "band"):
                tags.setdefault(k, getattr(first, k))
        return tags

    @staticmethod
    def _run_values(manifest: Any, path: Path, run_info: dict[str, Any] | None) -> dict[str, Any]:
        info = dict(run_info or {})
        job = manifest.job
        # one manifest = one execution of a job (its bytes carry the job's start and timings): keyed by the
        # bytes alone, a cleared register task or a later DAG run that re-registers it adds no run
        key_src = path.read_bytes()
        b = manifest.bytes or {}

        def pick(name: str, default: Any) -> Any:
            return info.get(name, default)

        return {
            "run_key": hashlib.sha256(key_src).hexdigest(),
            "dag_id": pick("dag_id", None), "run_id": pick("run_id", None), "task_id": pick("task_id", None),
            "try_number": pick("try_number", None), "batch_job_id": pick("batch_job_id", None),
            "job_name": pick("job_name", job.name), "site": pick("site", job.site), "host": pick("host", job.host),
            "start": pick("start", job.start), "end": pick("end", job.end), "state": pick("state", job.state),
            "exit_code": pick("exit_code", job.exit_code),
            "versions": json.dumps(manifest.versions or {}, sort_keys=True),
            "config_hash": manifest.config_hash,
            "bytes_read": pick("bytes_read", b.get("read", sum(i.size for i in manifest.inputs))),
            "bytes_written": pick("bytes_written", b.get("output", sum(p.size for p in manifest.products))),
            "manifest_path": str(path), "created_at": now(),
        }

    def _index_products(self, conn: Connection, items: Sequence[Item], stored: Sequence[StoredProduct]) -> None:
        """Exposure, CCD-image and tile rows for newly stored products."""
        exp_cache: dict[tuple[str, str, int], int | None] = {}
        ccd_rows = []
        for it, st in zip(items, stored, strict=True):
            t = it.tags
            if t.tile is not None:
                upsert_id(conn, S.tiles, {"survey": t.survey, "name": t.tile}, ("survey", "name"))
            if t.expnum is None or t.night is None:
                continue
            k = (t.survey, t.camera, t.expnum)
            if k not in exp_cache:
                exp_cache[k] = self._exposure_id(conn, t)
            if t.kind is ProductKind.IMAGE and t.ccd is not None and st.outcome != "same":
                ccd_rows.append({"exposure_id": exp_cache[k], "ccd": t.ccd, "version": t.version,
                                 "product_id": st.id})
        if ccd_rows:
            conn.execute(insert_stmt(conn, S.ccd_images).on_conflict_do_nothing(index_elements=["product_id"]), ccd_rows)

    def _add_lineage(self, conn: Connection, manifest: Any, items: Sequence[Item], stored: Sequence[StoredProduct],
                     by_path: dict[str | None, tuple[Item, StoredProduct]], run_id: int) -> None:
        p = S.products
        shas = sorted({inp.sha256 for inp in manifest.inputs})
        known: dict[str, int] = {}
        for j in range(0, len(shas), 500):
            for sha, pid in conn.execute(sa.select(p.c.sha256, sa.func.min(p.c.id))
                                         .where(p.c.sha256.in_(shas[j:j + 500])).group_by(p.c.sha256)):
                known[sha] = int(pid)
        edges: list[dict[str, Any]] = []
        for it, st in zip(items, stored, strict=True):
            wanted = it.inputs
            for inp in manifest.inputs:
                if wanted is None or inp.role in wanted:
                    edges.append({"product_id": st.id, "input_product_id": known.get(inp.sha256),
                                  "input_sha256": inp.sha256, "input_path": inp.path, "role": inp.role,
                                  "run_id": run_id})
            for name in wanted or []:
                if name in by_path:
                    src_it, src_st = by_path[name]
                    edges.append({"product_id": st.id, "input_product_id": src_st.id,
                                  "input_sha256": src_it.sha256, "input_path": src_st.path,
                                  "role": src_it.tags.kind.value, "run_id": run_id})
        if edges:
            conn.execute(insert_stmt(conn, S.lineage).on_conflict_do_nothing(
                index_elements=["product_id", "input_sha256", "role"]), edges)

    # ------------------------------------------------------------------ QA and quarantine
    def record_qa(self, checks: Sequence[dict[str, Any]] | dict[str, Any], *, tags: Tags | dict[str, Any] | None = None,
                  product: int | str | None = None, run_id: int | None = None) -> int:
        """Record QA checks (``{"name", "value", "threshold", "verdict"[, "ccd"]}`` or a qa.json document).

        Scope them with ``tags`` (an exposure, CCD or tile; partial tags as a dict are fine) or a
        ``product`` (id, path or sha256). Returns the number of rows written.
        """
        return qa.record_qa(self._db, self.root, checks, tags=tags, product=product, run_id=run_id)

    def qa_results(self, **filters: Any) -> list[QARow]:
        """QA rows, filtered by any of its columns (``expnum``, ``ccd``, ``tile``, ``check_name``, ...)."""
        return qa.qa_results(self._db, **filters)

    def quarantine(self, target: Tags | dict[str, Any] | int | str, reasons: Sequence[str] | str) -> int:
        """Quarantine a product, or everything an exposure, CCD or tile selector covers.

        ``target``: a product id, archive path or sha256, or full :class:`Tags` (one product);
        or a dict selector of ``survey``, ``night``, ``expnum``, ``ccd``, ``tile``, ``band``,
        ``version`` (e.g. ``{"survey": "des", "expnum": 241238}`` for a whole exposure: a
        selector without ``ccd`` covers every CCD; a record covers a target when every column
        the record sets matches it). Returns the record id;
        quarantining the same target with the same reasons again returns the existing record.
        """
        return qa.quarantine(self._db, self.root, target, reasons)

    def quarantine_reasons(self, target: Tags | dict[str, Any] | int | str) -> list[str]:
        """Reasons of every active quarantine record covering ``target`` (empty: not quarantined)."""
        return qa.quarantine_reasons(self._db, self.root, target)

    def is_quarantined(self, target: Tags | dict[str, Any] | int | str) -> bool:
        """True when an active quarantine record covers ``target``."""
        return bool(self.quarantine_reasons(target))

    # ------------------------------------------------------------------ queries
    def product(self, spec: int | str) -> ProductRow:
        """The product row for an id, archive path (relative or absolute) or sha256."""
        return queries.product(self._db, self.root, spec)

    def find(self, *, survey: str | None = None, night: str | None = None, expnum: int | None = None,
             ccd: int | None = None, tile: str | None = None, band: str | None = None, kind: str | None = None,
             version: str | None = None, stage: str | None = None, include_superseded: bool = False,
             limit: int | None = None) -> list[ProductRow]:
        """Products matching every given tag (current revisions only unless ``include_superseded``)."""
        return queries.find(self._db, survey=survey, night=night, expnum=expnum, ccd=ccd, tile=tile, band=band,
                            kind=kind, version=version, stage=stage, include_superseded=include_superseded,
                            limit=limit)

    def lineage(self, spec: int | str, *, direction: str = "up", depth: int | None = None) -> LineageGraph:
        """The lineage graph around a product, by a recursive CTE (PostgreSQL and SQLite alike).

        Parameters
        ----------
        spec : int or str
            Product id, archive path or sha256.
        direction : {"up", "down"}
            ``up``: what it was made from; ``down``: what was made from it.
        depth : int, optional
            Levels to follow (default: all, bounded at 64).

        Returns
        -------
        LineageGraph
            ``{"product": row, "direction": direction, "edges": [{"product_id", "input_id", "role",
            "input_path", "input_sha256", "depth"}], "products": {id: row}}``: edges point
            product <- input; ``input_id`` is None for inputs that are not archived products.
        """
        return queries.lineage(self._db, self.root, spec, direction=direction, depth=depth)

    def stale(self, spec: int | str | None = None) -> list[StaleRow]:
        """Current products made, directly or not, from a superseded product (one recursive CTE).

        With ``spec``: from that product (typically a replaced flat or an older image revision);
        without: from any superseded product. Each row carries ``depth`` (shortest distance) and
        ``from_id`` (the superseded product it descends from; the smallest id when several).
        """
        return queries.stale(self._db, self.root, spec)

    def cone(self, ra: float, dec: float, radius: float, *, current_only: bool = True,
             limit: int | None = None) -> list[ConeRow]:
        """Catalog objects within ``radius`` degrees of (``ra``, ``dec``), nearest first.

        Candidates come from HEALPix ranges (:func:`cone_ranges`); the exact great-circle
        distance then decides. Objects of superseded catalogs are left out unless
        ``current_only=False``. Each row has the object columns plus ``dist`` (degrees).
        """
        return queries.cone(self._db, ra, dec, radius, current_only=current_only, limit=limit)

    def counts(self) -> Counts:
        """Row counts of every table (for summaries and tests)."""
        return queries.counts(self._db)

    # ------------------------------------------------------------------ files against their checksums
    def fetch(self, spec: int | str) -> Path:
        """Path of a product's file after checking its sha256 (a corrupt file is never served silently)."""
        return verify_mod.fetch(self._db, self.root, spec)

    def verify(self, *, quarantine: bool = True) -> VerifyReport:
        """Check every archived file (current and superseded) against its recorded size and sha256.

        Missing and corrupt files are reported and, with ``quarantine=True``, quarantined (so
        :meth:`is_quarantined` and ``find`` consumers see them); :meth:`fetch` refuses them anyway.
        """
        return verify_mod.verify(self._db, self.root, quarantine=quarantine)
