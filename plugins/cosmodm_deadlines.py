"""Registers the nightly DAG's custom deadline reference with the scheduler (Airflow looks them up in plugins)."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from cosmodm_ops.airflow.deadlines import NightProductsDeadline


class CosmoDMDeadlinesPlugin(AirflowPlugin):
    name = "cosmodm_deadlines"
    deadline_references = [NightProductsDeadline]
