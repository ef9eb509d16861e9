"""The archive: products filed by tags under a root, with a lineage database beside them.

* :mod:`~cosmodm_ops.archive.layout`: tags -> path (pure), revisions, root containment;
* :mod:`~cosmodm_ops.archive.store`: atomic, checksummed placement of files;
* :mod:`~cosmodm_ops.archive.schema` + ``migrations/``: the database (SQLAlchemy Core + Alembic),
  the same on PostgreSQL (production) and SQLite (embedded default);
* :mod:`~cosmodm_ops.archive.catalogs`: LDAC catalogs -> object rows with HEALPix indices, cone search;
* :mod:`~cosmodm_ops.archive.api`: :class:`Archive`, the API the CLI and the Airflow layer use;
* :mod:`~cosmodm_ops.archive.deadlines`: missed Deadline Alerts (``deadline_misses``);
* :mod:`~cosmodm_ops.archive.cli`: ``cosmodm archive ...``.
"""

from __future__ import annotations

from cosmodm_ops.archive.api import Archive, StoredProduct, VerifyReport, read_qa_checks
from cosmodm_ops.archive.deadlines import deadline_misses, record_deadline_miss
from cosmodm_ops.archive.errors import ArchiveError, ArchiveInputError, ArchiveUnavailable, ProductNotFound
from cosmodm_ops.archive.layout import relpath_for, tag_key

__all__ = [
           "Archive",
           "ArchiveError",
           "ArchiveInputError",
           "ArchiveUnavailable",
           "ProductNotFound",
           "StoredProduct",
           "VerifyReport",
           "deadline_misses",
           "read_qa_checks",
           "record_deadline_miss",
           "relpath_for",
           "tag_key",
]
