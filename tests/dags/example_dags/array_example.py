"""
### array_example: one deferrable task per job array

A test DAG: two chunks (4 and 2 items), each ONE job array on the site given by `COSMODM_TEST_SITE`
(`local` by default) through `ArrayJobOperator`, at most 2 elements at once. Every element writes
`<COSMODM_TEST_OUT>/<job name>.<index>`; element 1 of the first chunk exits 3, which is an outcome in
the task's XCom, not a task failure.
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import DAG

from cosmodm_ops.airflow import ArrayJobOperator

OUT = os.environ.get("COSMODM_TEST_OUT", "/nonexistent/out")
SITE = os.environ.get("COSMODM_TEST_SITE", "local")
SCRIPT = ('printf "%s\\n" "$COSMODM_ARRAY_INDEX" > "$1/$COSMODM_JOB_NAME.$COSMODM_ARRAY_INDEX"; '
          'case "$COSMODM_JOB_NAME.$COSMODM_ARRAY_INDEX" in *.m0.t0.1) exit 3;; esac')

with DAG(
    dag_id="array_example",
    doc_md=__doc__,
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    default_args={"retries": 1, "retry_delay": pendulum.duration(seconds=5)},
    tags=["cosmodm", "test"],
) as dag:
    ArrayJobOperator.partial(task_id="chunk", site=SITE, array_max_parallel=2,
                             command=["bash", "-c", SCRIPT, "element", OUT]).expand(array_size=[4, 2])
