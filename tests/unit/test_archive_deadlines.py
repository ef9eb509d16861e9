"""The deadline_misses table (migration 0004): recorded once per (DAG, run, due time), read back by filter."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from cosmodm_ops.archive import Archive, deadline_misses, record_deadline_miss


def test_migration_creates_the_table_the_schema_describes(tmp_path):
    archive = Archive(f"sqlite:///{tmp_path / 'a.db'}", tmp_path / "root")
    from tests.unit.test_archive_db import _schema_head

    assert archive.init() == _schema_head()  # the newest migration
    insp = sa.inspect(archive.engine)
    cols = {c["name"] for c in insp.get_columns("deadline_misses")}
    from cosmodm_ops.archive.deadlines import deadline_misses_table

    assert cols == {c.name for c in deadline_misses_table.columns}
    assert archive.counts()["deadline_misses"] == 0


def test_record_once_and_filter(tmp_path):
    archive = Archive(f"sqlite:///{tmp_path / 'a.db'}", tmp_path / "root")
    archive.init()
    due = dt.datetime(2026, 11, 24, 12, 0)  # naive: taken as UTC
    now = dt.datetime(2026, 11, 24, 12, 0, 7, tzinfo=dt.UTC)
    kw = {"dag_id": "nightly_ingest", "run_id": "manual__1", "survey": "demo", "night": "2026-11-23",
          "site": "local", "run_state": "running", "deadline_id": "abc"}
    assert record_deadline_miss(archive, due_at=due, now=now, **kw) is True
    assert record_deadline_miss(archive, due_at="2026-11-24T12:00:00Z", now=now, **kw) is False  # the same miss
    assert record_deadline_miss(archive, due_at=due, now=now, **{**kw, "run_id": "manual__2"}) is True
    rows = deadline_misses(archive, run_id="manual__1")
    assert len(rows) == 1 and rows[0]["due_at"] == "2026-11-24T12:00:00+00:00"
    assert rows[0]["recorded_at"] == "2026-11-24T12:00:07+00:00" and rows[0]["night"] == "2026-11-23"
    assert len(deadline_misses(archive, night="2026-11-23")) == 2 and deadline_misses(archive, night="x") == []


def test_due_time_of_a_night_from_the_survey(monkeypatch):
    from cosmodm_ops.workflows.deadlines import night_due_at, single_epoch_due

    assert night_due_at("2026-11-23", 36).isoformat() == "2026-11-24T12:00:00+00:00"
    plan, due = single_epoch_due({"night": "2026-11-23", "survey": "demo", "site": "local"})
    assert plan.night == "2026-11-23" and due == dt.datetime(2026, 11, 24, 12, tzinfo=dt.UTC)
    # a scheduled run: the night is the data interval's start date
    _, due2 = single_epoch_due({}, "2026-11-25T14:00:00+00:00", None)
    assert due2 == dt.datetime(2026, 11, 26, 12, tzinfo=dt.UTC)
    monkeypatch.setenv("COSMODM_CONFIG_OVERRIDES", '{"survey": {"single_epoch_deadline_h": null}}')
    assert single_epoch_due({"night": "2026-11-23"}) is None


def test_record_miss_files_the_row_in_the_runs_archive(tmp_path, monkeypatch):
    from cosmodm_ops.workflows.deadlines import record_miss

    db = f"sqlite:///{tmp_path / 'a.db'}"
    monkeypatch.setenv("COSMODM_DB", db)
    monkeypatch.setenv("COSMODM_ARCHIVE_ROOT", str(tmp_path / "root"))
    archive = Archive(db, tmp_path / "root")
    archive.init()
    run = {"dag_id": "nightly_ingest", "dag_run_id": "manual__x", "state": "running",
           "conf": {"night": "2026-11-23", "survey": "demo", "site": "local"}}
    out = record_miss(run, {"id": "d1", "deadline_time": "2026-11-24T12:00:00Z"})
    assert out["new"] and record_miss(run, {"id": "d1", "deadline_time": "2026-11-24T12:00:00Z"})["new"] is False
    (row,) = deadline_misses(archive)
    assert (row["night"], row["survey"], row["site"], row["run_state"], row["deadline_id"]) == (
        "2026-11-23", "demo", "local", "running", "d1")
