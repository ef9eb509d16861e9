"""Missed deadlines in the archive: the ``deadline_misses`` table (migration 0004) and its two calls.

The nightly DAG's Deadline Alert ("the night's single-epoch products by ``survey.single_epoch_deadline_h``
after 00:00 UTC of the night's date") calls :func:`record_deadline_miss` through its callback
(``cosmodm_ops.airflow.deadlines.record_nightly_deadline_miss``); operations read the misses back with
:func:`deadline_misses`. One row per (DAG, run, due time): recording the same miss twice adds nothing.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from cosmodm_ops.archive.schema import _BigId, metadata

__all__ = ["deadline_misses", "deadline_misses_table", "record_deadline_miss"]

deadline_misses_table = sa.Table(
    "deadline_misses", metadata,
    sa.Column("id", _BigId, primary_key=True, autoincrement=True),
    sa.Column("dag_id", sa.String(250), nullable=False),
    sa.Column("run_id", sa.String(250), nullable=False),
    sa.Column("survey", sa.String(64)),
    sa.Column("night", sa.String(10)),
    sa.Column("site", sa.String(100)),
    sa.Column("due_at", sa.String(40), nullable=False, doc="ISO 8601 UTC: when the products were due"),
    sa.Column("recorded_at", sa.String(40), nullable=False, doc="ISO 8601 UTC: when the miss was recorded"),
    sa.Column("run_state", sa.String(20), doc="the DAG run's state when the deadline passed"),
    sa.Column("deadline_id", sa.String(64), doc="Airflow's deadline row (uuid)"),
    sa.UniqueConstraint("dag_id", "run_id", "due_at"),
    sa.Index(None, "night"),
)


def _iso(value: dt.datetime | str) -> str:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).isoformat(timespec="seconds")


def record_deadline_miss(archive: Any, *, dag_id: str, run_id: str, due_at: dt.datetime | str,
                         survey: str | None = None, night: str | None = None, site: str | None = None,
                         run_state: str | None = None, deadline_id: str | None = None,
                         now: dt.datetime | None = None) -> bool:
    """File one missed deadline; returns False when that miss was already recorded.

    Parameters
    ----------
    archive : cosmodm_ops.archive.Archive
    due_at : datetime or ISO string
        When the products were due (UTC; a naive value is taken as UTC).
    now : datetime, optional
        The recording time (default: the clock, UTC).
    """
    row = {"dag_id": dag_id, "run_id": run_id, "survey": survey, "night": night, "site": site,
           "due_at": _iso(due_at), "recorded_at": _iso(now or dt.datetime.now(dt.UTC)), "run_state": run_state,
           "deadline_id": deadline_id}
    from cosmodm_ops.archive.db import insert_stmt

    with archive._tx() as conn:
        stmt = insert_stmt(conn, deadline_misses_table).values(**row).on_conflict_do_nothing(
            index_elements=["dag_id", "run_id", "due_at"])
        return conn.execute(stmt).rowcount == 1


def deadline_misses(archive: Any, *, dag_id: str | None = None, run_id: str | None = None,
                    night: str | None = None) -> list[dict[str, Any]]:
    """Recorded misses matching every given field, oldest first."""
    t = deadline_misses_table
    query = sa.select(t).order_by(t.c.id)
    for col, value in (("dag_id", dag_id), ("run_id", run_id), ("night", night)):
        if value is not None:
            query = query.where(t.c[col] == value)
    with archive._tx() as conn:
        return [dict(r._mapping) for r in conn.execute(query)]
