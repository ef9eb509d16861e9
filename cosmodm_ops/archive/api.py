"""The archive: files under a root, filed by tags, and the lineage database beside them.

``Archive(db_url, root)`` is what the CLI, the workflows and the Airflow layer use. It is a
thin facade: each method is one call into the module that owns the concern.

* :mod:`.db` -- engine, transactions (errors sorted by what a retry achieves), advisory locks, upserts;
* :mod:`.storage` -- files as product revisions (placement via :mod:`.store`, supersede, heal);
* :mod:`.register` -- manifests and raw exposures into runs, products, lineage, QA and objects;
* :mod:`.qa` -- ``qa.json``, QA rows, quarantine records;
* :mod:`.queries` -- product lookup, find, lineage, stale, cone, counts, answering :mod:`.rows`;
* :mod:`.objects` -- catalog objects into the database (COPY / batched INSERT);
* :mod:`.verify` -- files against their checksums (fetch one, verify all).

Every write is one database transaction, and every file is placed (atomically,
checksummed) before the row that points to it is inserted, inside that transaction: a
killed process leaves at most an unreferenced complete file, never a row pointing to a
missing file.

Concurrency: on PostgreSQL each transaction takes a transaction-scoped advisory lock per
product key (in sorted order, so two registrations never deadlock) before it reads the
current revision; on SQLite every transaction is ``BEGIN IMMEDIATE``. Registering the same
product from several processes at once therefore leaves one row.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import AbstractContextManager
from functools import cached_property
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from cosmodm_ops.archive import qa, queries, register, storage
from cosmodm_ops.archive import verify as verify_mod
from cosmodm_ops.archive.db import Database, upgrade
from cosmodm_ops.archive.objects import copy_objects, insert_objects
from cosmodm_ops.archive.qa import read_qa_checks
from cosmodm_ops.archive.rows import ConeRow, Counts, LineageGraph, ProductRow, QARow, StaleRow
from cosmodm_ops.archive.storage import StoredProduct
from cosmodm_ops.archive.verify import VerifyReport
from cosmodm_ops.model import Tags

__all__ = ["Archive", "StoredProduct", "VerifyReport", "copy_objects", "insert_objects", "read_qa_checks"]


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
    def read_engine(self) -> Engine:
        """The engine of read-only work (SQLite: deferred ``BEGIN`` on a WAL snapshot, ``query_only``)."""
        return self._db.read_engine

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
        return storage.store_file(self._db, self.root, src, tags, sha256=sha256)

    def supersede_by_unit(self, replaces: Sequence[int], new_ids: Sequence[int], keep_version: str) -> int:
        """Products of ``replaces`` at another version than ``keep_version`` superseded by the new product of
        the same unit (:func:`~cosmodm_ops.archive.storage.supersede_by_unit`); returns how many."""
        return storage.supersede_by_unit(self._db, replaces, new_ids, keep_version)

    def register_raw(self, path: str | os.PathLike[str], tags: Tags | dict[str, Any], *,
                     sha256: str | None = None, header: dict[str, Any] | None = None) -> int:
        """File a raw exposure and upsert its ``exposures`` row; returns the product id.

        ``tags`` must have stage ``raw``, kind ``raw``, night and expnum. ``header`` may give
        ``EXPTIME``, ``RA``/``DEC`` (degrees) for the exposure row. Re-running is a no-op.
        """
        return register.register_raw(self._db, self.root, path, tags, sha256=sha256, header=header)

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
        return register.register_manifest(self._db, self.root, path, run_info)

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
