"""When a night's single-epoch products are due, and filing a miss (no Airflow import).

``survey.single_epoch_deadline_h`` (hours after 00:00 UTC of the night's date; 36 = 12:00 UTC the next
day) sets the due time of each ``nightly_ingest`` run; the Airflow layer
(:mod:`cosmodm_ops.airflow.deadlines`) turns it into a Deadline Alert whose callback calls
:func:`record_miss`.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

__all__ = ["night_due_at", "record_miss", "single_epoch_due"]

log = logging.getLogger(__name__)


def night_due_at(night: str, hours_after_midnight: float) -> dt.datetime:
    """``night`` (YYYY-MM-DD) at 00:00 UTC plus ``hours_after_midnight`` hours, as an aware UTC datetime."""
    start = dt.datetime.fromisoformat(night).replace(tzinfo=dt.UTC)
    return start + dt.timedelta(hours=hours_after_midnight)


def _parse_time(value: Any) -> dt.datetime | None:
    if value is None or isinstance(value, dt.datetime):
        return value
    return dt.datetime.fromisoformat(str(value))


def single_epoch_due(conf: dict[str, Any] | None, data_interval_start: Any = None,
                     run_after: Any = None) -> tuple[Any, dt.datetime] | None:
    """(plan, due time) of a nightly run from its conf and dates; None when its survey sets no deadline.

    Raises
    ------
    ValueError, ConfigError
        The run's night or configuration is unusable (the run itself fails on the same error).
    """
    from cosmodm_ops.workflows.nightly import resolve_night

    plan = resolve_night(dict(conf or {}), _parse_time(data_interval_start), _parse_time(run_after))
    hours = plan.config().survey.single_epoch_deadline_h
    if hours is None:
        return None
    return plan, night_due_at(plan.night, hours)


def record_miss(dag_run: dict[str, Any], deadline: dict[str, Any]) -> dict[str, Any]:
    """File a missed deadline of a nightly run in its archive and log it; returns the row's fields.

    Parameters
    ----------
    dag_run : dict
        The run as Airflow's REST model (``dag_id``, ``dag_run_id``, ``conf``, ``state``,
        ``data_interval_start``, ``run_after``).
    deadline : dict
        ``{"id", "deadline_time"}`` of Airflow's deadline row.
    """
    from cosmodm_ops.archive import Archive, record_deadline_miss
    from cosmodm_ops.workflows.nightly import archive_settings

    found = single_epoch_due(dag_run.get("conf"), dag_run.get("data_interval_start"), dag_run.get("run_after"))
    plan = found[0] if found else None
    due = _parse_time(deadline.get("deadline_time")) or (found[1] if found else None)
    if plan is None or due is None:
        msg = f"deadline of {dag_run.get('dag_id')} {dag_run.get('dag_run_id')}: no night or due time to record"
        raise ValueError(msg)
    db_url, root = archive_settings(plan.config())
    fields = {"dag_id": str(dag_run.get("dag_id")), "run_id": str(dag_run.get("dag_run_id")), "survey": plan.survey,
              "night": plan.night, "site": plan.site, "run_state": dag_run.get("state"),
              "deadline_id": str(deadline.get("id") or "") or None}
    new = record_deadline_miss(Archive(db_url, root), due_at=due, **fields)
    log.warning("deadline missed: %s run %s, night %s (%s): single-epoch products were due %s; %s in the archive",
                fields["dag_id"], fields["run_id"], plan.night, plan.survey, due.isoformat(),
                "recorded" if new else "already recorded")
    return {**fields, "due_at": due.isoformat(), "new": new}
