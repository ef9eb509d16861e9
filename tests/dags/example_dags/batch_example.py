"""
### batch_example: the Airflow layer on its own

A test DAG: moves a file with `TransferOperator` (local) and runs a short command as a
batch job with `BatchJobOperator` (the site given by `COSMODM_TEST_SITE`, `local` by default),
deferring while the job runs (in the site's pool when `COSMODM_POOLS` is on: the operator's default).
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import DAG

from cosmodm_ops.airflow import BatchJobOperator, TransferOperator

SRC = os.environ.get("COSMODM_TEST_SRC", "/nonexistent/src.bin")
DST = os.environ.get("COSMODM_TEST_DST", "/nonexistent/dst.bin")
SLEEP = os.environ.get("COSMODM_TEST_SLEEP", "1")
SITE = os.environ.get("COSMODM_TEST_SITE", "local")

with DAG(
    dag_id="batch_example",
    doc_md=__doc__,
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    default_args={"retries": 1, "retry_delay": pendulum.duration(seconds=5)},
    tags=["cosmodm", "test"],
) as dag:
    moved = TransferOperator(task_id="transfer", site=SITE, items=[{"src": SRC, "dst": DST}])
    job = BatchJobOperator(task_id="job", site=SITE,
                           command=["python3", "-c", f"import time; time.sleep({SLEEP}); print('hello from the job')"])
    moved >> job
