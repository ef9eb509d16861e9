"""The archive: products filed by tags under a root, with a lineage database beside them.

* :mod:`~cosmodm_ops.archive.layout`: tags -> path (pure), revisions, root containment;
* :mod:`~cosmodm_ops.archive.store`: atomic, checksummed placement of one file (no database);
* :mod:`~cosmodm_ops.archive.schema` + ``migrations/``: the database (SQLAlchemy Core + Alembic),
  the same on PostgreSQL (production) and SQLite (embedded default);
* :mod:`~cosmodm_ops.archive.db`: engine, transactions and error translation, advisory locks, upserts;
* :mod:`~cosmodm_ops.archive.storage`: files as product revisions (next revision, supersede, heal);
* :mod:`~cosmodm_ops.archive.register`: manifests and raws -> runs, products, lineage, QA, objects;
* :mod:`~cosmodm_ops.archive.qa`: ``qa.json`` reading, QA rows, quarantine records;
* :mod:`~cosmodm_ops.archive.queries`: product lookup, find, lineage, stale, cone, counts;
* :mod:`~cosmodm_ops.archive.rows`: the typed rows queries answer (frozen dataclasses, read-only dicts);
* :mod:`~cosmodm_ops.archive.catalogs`: LDAC catalogs -> object columns with HEALPix indices, cone ranges;
* :mod:`~cosmodm_ops.archive.objects`: object columns -> the ``objects`` table (COPY / INSERT);
* :mod:`~cosmodm_ops.archive.verify`: files against their checksums (fetch, verify);
* :mod:`~cosmodm_ops.archive.api`: :class:`Archive`, the facade the CLI and the Airflow layer use;
* :mod:`~cosmodm_ops.archive.deadlines`: missed Deadline Alerts (``deadline_misses``);
* :mod:`~cosmodm_ops.archive.cli`: ``cosmodm archive ...``.
"""

from __future__ import annotations

from cosmodm_ops.archive.api import Archive, StoredProduct, VerifyReport, read_qa_checks
from cosmodm_ops.archive.deadlines import deadline_misses, record_deadline_miss
from cosmodm_ops.archive.errors import ArchiveError, ArchiveInputError, ArchiveUnavailable, ProductNotFound
from cosmodm_ops.archive.layout import relpath_for, tag_key
from cosmodm_ops.archive.rows import ConeRow, Counts, LineageEdge, LineageGraph, ProductRow, QARow, StaleRow

__all__ = [
           "Archive",
           "ArchiveError",
           "ArchiveInputError",
           "ArchiveUnavailable",
           "ConeRow",
           "Counts",
           "LineageEdge",
           "LineageGraph",
           "ProductNotFound",
           "ProductRow",
           "QARow",
           "StaleRow",
           "StoredProduct",
           "VerifyReport",
           "deadline_misses",
           "read_qa_checks",
           "record_deadline_miss",
           "relpath_for",
           "tag_key",
]
