"""The Deadline Alert of ``nightly_ingest``: the night's single-epoch products by a survey's due time.

* :class:`NightProductsDeadline`, a custom deadline reference: evaluated by the scheduler when a run is
  created, it returns the night's due time (``survey.single_epoch_deadline_h`` after 00:00 UTC of the
  night's date; :func:`cosmodm_ops.workflows.deadlines.single_epoch_due`). Registered with the scheduler by
  the plugin ``plugins/cosmodm_deadlines.py`` (Airflow finds custom references only through plugins).
* :func:`record_nightly_deadline_miss`, the ``AsyncCallback`` the triggerer runs when the run is still not
  done at that time: it files a ``deadline_misses`` row in the archive and logs a warning.
* :data:`NIGHTLY_DEADLINE`, the alert the DAG passes as ``deadline=``.

A run for a night whose due time is already past (a late or repeated night) gets its miss recorded at once.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import sys
from pathlib import Path
from typing import Any

from airflow.sdk import AsyncCallback, DeadlineAlert
from airflow.sdk.definitions.deadline import BaseDeadlineReference

__all__ = ["NIGHTLY_DEADLINE", "NightProductsDeadline", "nightly_deadline", "record_nightly_deadline_miss"]

log = logging.getLogger(__name__)


class NightProductsDeadline(BaseDeadlineReference):
    """The due time of a nightly run's single-epoch products, from its night and survey."""

    required_kwargs = {"dag_id", "run_id"}

    def _evaluate_with(self, *, session: Any, **kwargs: Any) -> dt.datetime | None:
        from airflow.models import DagRun
        from sqlalchemy import select

        from cosmodm_ops.workflows.deadlines import single_epoch_due

        run = session.scalar(select(DagRun).where(DagRun.dag_id == kwargs["dag_id"],
                                                  DagRun.run_id == kwargs["run_id"]))
        if run is None:
            return None
        try:
            found = single_epoch_due(run.conf, run.data_interval_start, run.run_after)
        except ValueError as err:  # ConfigError too: the run fails on it itself; no deadline to keep
            log.warning("no deadline for %s %s: %s", kwargs["dag_id"], kwargs["run_id"], err)
            return None
        return found[1] if found else None


async def record_nightly_deadline_miss(context: dict[str, Any] | None = None, **_: Any) -> str:
    """Deadline callback (runs in the triggerer): record the miss in the archive and log it.

    Returns a one-line summary: Airflow stores the result in ``callback.output``, a text column (a dict
    there made the 3.3.2 triggerer exit with "can't adapt type 'dict'").
    """
    from cosmodm_ops.workflows.deadlines import record_miss

    context = context or {}
    row = await asyncio.to_thread(record_miss, context.get("dag_run") or {}, context.get("deadline") or {})
    return (f"{'recorded' if row['new'] else 'already recorded'}: {row['dag_id']} {row['run_id']} night "
            f"{row['night']} due {row['due_at']}")


NIGHTLY_DEADLINE = DeadlineAlert(
    reference=NightProductsDeadline(),
    interval=dt.timedelta(0),
    callback=AsyncCallback(record_nightly_deadline_miss),
    name="single-epoch products of the night",
)


def nightly_deadline() -> DeadlineAlert | None:
    """:data:`NIGHTLY_DEADLINE`, or None under ``airflow dags test`` or with ``COSMODM_NIGHTLY_DEADLINE=0``.

    Airflow 3.3.2's ``dag.test()`` (``airflow dags test``, ``make demo``) crashes when the run ends on a DAG
    with a deadline (``DagRun.update_state`` looks up ``dag.deadline`` entries as database ids:
    "'dict' object has no attribute 'hex'"); no scheduler runs there to check deadlines anyway.
    """
    if os.environ.get("COSMODM_NIGHTLY_DEADLINE", "1").lower() in {"0", "false", "no"}:
        return None
    argv = [a for a in sys.argv[1:] if not a.startswith("-")]
    if Path(sys.argv[0]).name == "airflow" and argv[:2] == ["dags", "test"]:
        return None
    return NIGHTLY_DEADLINE
