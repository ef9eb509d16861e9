"""The CosmoDM survey pages in the Airflow UI, behind Airflow's authentication.

A FastAPI app mounted by the Airflow API server at ``/cosmodm`` (every route requires a valid
Airflow JWT: the UI's ``_token`` cookie or an ``Authorization: Bearer`` header), a "Survey"
navigation entry, external views on DAG runs (a ``nightly_ingest`` run opens its night) and task
instances (the products the task made), and a "QA report" extra link that the nightly summary
task fills. Archive location: ``COSMODM_DB`` and ``COSMODM_ARCHIVE_ROOT`` in the API server's
environment.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin
from airflow.sdk import BaseOperatorLink

from cosmodm_ops.airflow.webapp import app


class QAReportLink(BaseOperatorLink):
    """The night's QA report, for the task that wrote it (XCom key ``_link_QAReportLink``)."""

    name = "QA report"

    def get_link(self, operator, *, ti_key) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        return XCom.get_value(ti_key=ti_key, key=self.xcom_key) or ""


class CosmoDMPlugin(AirflowPlugin):
    name = "cosmodm"
    fastapi_apps = [{"app": app, "url_prefix": "/cosmodm", "name": "CosmoDM survey pages"}]
    external_views = [
        {"name": "Survey", "href": "/cosmodm/", "destination": "nav", "url_route": "cosmodm", "nav_top_level": True},
        {"name": "Survey: night and products", "href": "/cosmodm/runs/{DAG_ID}/{RUN_ID}", "destination": "dag_run",
         "url_route": "cosmodm-run"},
        {"name": "Survey: products", "href": "/cosmodm/ti/{DAG_ID}/{RUN_ID}/{TASK_ID}?map_index={MAP_INDEX}",
         "destination": "task_instance", "url_route": "cosmodm-ti"},
    ]
    global_operator_extra_links = [QAReportLink()]
