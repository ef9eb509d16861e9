"""The archive database plumbing: engine, transactions, advisory locks, upserts, the schema migration.

Everything here is independent of what the tables mean. :class:`Database` owns the engine
and opens transactions that translate database errors by what a retry would achieve
(unreachable or locked: :class:`ArchiveUnavailable`; not initialised or refused:
:class:`ArchiveError`). The functions below work inside a caller's transaction (a
``Connection``) and read the dialect from it.

Concurrency: on PostgreSQL a writer takes a transaction-scoped advisory lock per product
key (:func:`lock_keys`, in sorted order, so two registrations never deadlock) before it
reads the current revision; on SQLite every transaction is ``BEGIN IMMEDIATE``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from cosmodm_ops.archive.errors import ArchiveError, ArchiveUnavailable

__all__ = ["CHUNK", "Database", "chunks", "insert_stmt", "lock_id", "lock_keys", "now", "upgrade", "upsert_id"]

CHUNK = 500
"""Values per ``IN (...)`` list (SQLite allows 999 bound parameters per statement)."""


def now() -> str:
    """The current UTC time as ISO 8601 to the second (the ``created_at`` columns)."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def chunks(values: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    """Consecutive slices of at most ``size`` values."""
    for i in range(0, len(values), size):
        yield values[i:i + size]


def lock_id(key: str) -> int:
    """The signed 64-bit PostgreSQL advisory-lock id of a key."""
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)


def lock_keys(conn: Connection, keys: Iterable[str]) -> None:
    """Take the transaction-scoped advisory locks of ``keys``, in sorted order (PostgreSQL only).

    On SQLite ``BEGIN IMMEDIATE`` already serialises writers, so this does nothing.
    """
    if conn.dialect.name != "postgresql":
        return
    ids = sorted({lock_id(k) for k in keys})
    if ids:
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(k) FROM "
                             "(SELECT k FROM unnest(CAST(:ids AS bigint[])) AS t(k) ORDER BY k) AS s"),
                     {"ids": ids})


def insert_stmt(conn: Connection, table: sa.Table) -> Any:
    """A dialect ``INSERT`` of ``table`` (PostgreSQL or SQLite) that has ``on_conflict_do_nothing``."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table)


def upsert_id(conn: Connection, table: sa.Table, values: dict[str, Any], keys: Sequence[str],
              update: Sequence[str] = ()) -> int:
    """Insert unless a row with the same ``keys`` exists; fill in ``update`` columns that are NULL.

    Returns the row's id (new or existing).
    """
    conn.execute(insert_stmt(conn, table).values(**values).on_conflict_do_nothing(index_elements=list(keys)))
    where = [table.c[k] == values[k] for k in keys]
    row = conn.execute(sa.select(table).where(*where)).mappings().one()
    fill = {c: values[c] for c in update if values.get(c) is not None and row[c] is None}
    if fill:
        conn.execute(sa.update(table).where(table.c.id == row["id"]).values(**fill))
    return int(row["id"])


def upgrade(conn: Connection) -> str:
    """Bring the schema to the newest Alembic migration inside ``conn``'s transaction; the revision.

    On PostgreSQL two at once are serialised by an advisory lock (one migrates, the other waits).
    """
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_id("cosmodm-archive-init")})
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, "head")
    return str(MigrationContext.configure(conn).get_current_revision())


class Database:
    """The engine of one archive database and its transactions.

    Parameters
    ----------
    url : str
        SQLAlchemy URL (``postgresql+psycopg2://...`` or ``sqlite:///path.db``).
    label : str
        How error messages name this archive (the ``Archive`` repr, password hidden).
    """

    def __init__(self, url: str, label: str) -> None:
        self.url = url
        self.label = label

    @cached_property
    def engine(self) -> Engine:
        url = sa.engine.make_url(self.url)
        if url.get_backend_name() == "sqlite":
            return _sqlite_engine(url)
        return _server_engine(url)

    @cached_property
    def read_engine(self) -> Engine:
        """The engine of read-only work (the survey pages, lookups).

        SQLite: its own connections with a deferred ``BEGIN`` and ``PRAGMA query_only``, so readers
        share the WAL snapshot instead of queueing one by one for the write lock that ``BEGIN
        IMMEDIATE`` takes. PostgreSQL: its own pool in autocommit. At the default READ COMMITTED every
        statement takes its own snapshot inside a transaction too, so a reader loses nothing, and saves the
        ``BEGIN`` and the ``ROLLBACK`` at check-in: two of a survey page's six to nine round trips to
        the server, each a wait for the scheduler when the cores are busy. Other backends: :attr:`engine`.
        """
        url = sa.engine.make_url(self.url)
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            return _sqlite_engine(url, read_only=True)
        if url.get_backend_name() == "postgresql":
            return _server_engine(url, isolation_level="AUTOCOMMIT")
        return self.engine  # an in-memory SQLite (one database per connection)

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    @contextmanager
    def transaction(self, *, read: bool = False) -> Iterator[Connection]:
        """One transaction; database errors translated (unreachable/locked -> ArchiveUnavailable).

        ``read=True``: a read-only transaction on :attr:`read_engine` (SQLite: writes are refused).
        """
        try:
            with (self.read_engine if read else self.engine).begin() as conn:
                yield conn
        except sa.exc.OperationalError as err:
            text = str(err.orig) if err.orig is not None else str(err)
            if "no such table" in text:
                msg = f"archive database {self.label} is not initialised: run `cosmodm archive init`"
                raise ArchiveError(msg) from err
            msg = f"archive database unreachable or busy ({text.strip().splitlines()[0][:300]}); retry later"
            raise ArchiveUnavailable(msg) from err
        except sa.exc.InterfaceError as err:
            msg = f"archive database connection failed ({err.orig}); retry later"
            raise ArchiveUnavailable(msg) from err
        except sa.exc.IntegrityError as err:
            msg = f"archive database refused the write ({str(err.orig).strip().splitlines()[0][:300]})"
            raise ArchiveError(msg) from err
        except sa.exc.ProgrammingError as err:
            if "does not exist" in str(err.orig) and "relation" in str(err.orig):
                msg = f"archive database {self.label} is not initialised: run `cosmodm archive init`"
                raise ArchiveError(msg) from err
            raise


def _server_engine(url: sa.engine.URL, **kw: Any) -> Engine:
    """A pre-ping pool to a database server (PostgreSQL: a 5 s connect timeout); ``kw`` to ``create_engine``."""
    args = {"connect_timeout": 5} if url.get_backend_name() == "postgresql" else {}
    return sa.create_engine(url, connect_args=args, pool_pre_ping=True, **kw)


def _sqlite_engine(url: sa.engine.URL, *, read_only: bool = False) -> Engine:
    """SQLite in WAL mode, every transaction ``BEGIN IMMEDIATE`` (writers queue instead of failing).

    ``read_only``: deferred ``BEGIN`` (a WAL snapshot: readers neither wait for nor block each other)
    and ``PRAGMA query_only``.
    """
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url, connect_args={"timeout": 60})

    @sa.event.listens_for(engine, "connect")
    def _sqlite_connect(dbapi_conn: Any, _rec: Any) -> None:
        dbapi_conn.isolation_level = None  # let the "begin" hook emit BEGIN IMMEDIATE
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        if read_only:
            cur.execute("PRAGMA query_only=1")
        cur.close()

    @sa.event.listens_for(engine, "begin")
    def _sqlite_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine
