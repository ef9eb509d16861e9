"""
### nightly_ingest: one run per night

Picks up the night's raw exposures, brings them to the compute site, runs the
single-epoch pipeline for each exposure as a batch job, gates each exposure on QA,
and files everything in the archive with lineage.

* **discover**: the night's raw files (`<site.raw_source>/<night>/raw`), each opened and
  checked; a corrupt file is quarantined with its reason and the rest proceed.
* **transfer**: raw files, calibrations and reference catalogs to the site (checksums).
* **register_raw**: raw exposures into the archive (an upsert: re-runs add nothing).
* **exposure** (mapped, one per exposure, labelled by exposure number):
  `single_epoch` (batch job: `cosmodm single-epoch run`) -> `register` (products,
  lineage, QA rows, batch accounting) -> `qa_gate` (accepted, or quarantined: the task
  is *skipped* with a note naming the failed checks; asset events for the tiles touched).
* **summary**: counts and the HTML QA report (filed in the archive), whatever happened.

**Deadline**: the night's single-epoch products are due `survey.single_epoch_deadline_h` hours after
00:00 UTC of the night's date (36 h = 12:00 UTC the next day); a run still going then has the miss
recorded in the archive (`deadline_misses`) and logged by the triggerer.

Trigger by hand with the form: night (YYYY-MM-DD), site, survey, version, force.
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import DAG, Asset, Param, task, task_group

from cosmodm_ops.airflow import BatchJobOperator, TransferOperator
from cosmodm_ops.airflow.deadlines import nightly_deadline

SITE = os.environ.get("COSMODM_SITE", "local")
#: Assets the nightly DAG updates: one per (tile, band), partitioned by extra; tile_coadd waits on it.
SINGLE_EPOCH_ASSET = Asset("cosmodm://single_epoch/accepted", group="cosmodm")

default_args = {"retries": 2, "retry_delay": pendulum.duration(minutes=2), "owner": "survey-ops"}

with DAG(
    dag_id="nightly_ingest",
    doc_md=__doc__,
    schedule=os.environ.get("COSMODM_NIGHTLY_SCHEDULE", "0 14 * * *") or None,  # "": triggered runs only
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=os.environ.get("COSMODM_NIGHTLY_CATCHUP", "false").lower() == "true",
    max_active_runs=2,
    default_args=default_args,
    deadline=nightly_deadline(),  # products due survey.single_epoch_deadline_h after the night's 00:00 UTC
    tags=["cosmodm", "nightly", "single-epoch"],
    params={
        "night": Param("", type="string", title="Night (YYYY-MM-DD)",
                       description="Empty: the night of the data interval."),
        "site": Param(SITE, type="string", title="Compute site", description="include/configs/sites/<site>.yaml"),
        "survey": Param("demo", type="string", title="Survey", description="include/configs/surveys/<survey>.yaml"),
        "version": Param("v1", type="string", title="Pipeline version"),
        "force": Param(False, type="boolean", title="Force", description="Redo exposures already archived."),
    },
) as dag:

    @task
    def plan_night(params=None, data_interval_start=None, dag_run=None) -> dict:
        """Resolve the night and check the configuration (file, key and value on error)."""
        from dataclasses import asdict

        from cosmodm_ops.workflows.nightly import resolve_night

        run_after = getattr(dag_run, "run_after", None)
        return asdict(resolve_night(dict(params or {}), data_interval_start, run_after))

    @task
    def discover(plan: dict) -> list[dict]:
        """The night's raw exposures; corrupt files are quarantined here with their reason."""
        from cosmodm_ops.airflow.nightly_tasks import discover_task

        return discover_task(plan)

    @task
    def transfer_items(plan: dict) -> list[dict]:
        """What to move to the site."""
        from cosmodm_ops.workflows.nightly import NightPlan, transfer_items

        return transfer_items(NightPlan(**plan))

    @task
    def register_raw(plan: dict, exposures: list[dict]) -> int:
        """Raw exposures into the archive (upsert)."""
        from cosmodm_ops.airflow.nightly_tasks import register_raw_task

        return register_raw_task(plan, exposures)

    @task
    def plan_jobs(plan: dict, exposures: list[dict]) -> list[dict]:
        """One single-epoch job per good exposure (already archived ones skipped unless force)."""
        from cosmodm_ops.airflow.nightly_tasks import plan_jobs_task

        return plan_jobs_task(plan, exposures)

    @task_group(group_id="exposure")
    def exposure(expnum: int, band: str, command: list[str], out: str, plan: dict):
        run = BatchJobOperator(
            task_id="single_epoch",
            stage="single_epoch",
            site=SITE,
            command=command,
            job_label=expnum,
            map_index_template="exp {{ task.job_label }}",
            max_active_tis_per_dagrun=int(os.environ.get("COSMODM_MAX_CONCURRENT", "4")),
        )

        @task(map_index_template="exp {{ expnum }}")
        def register(plan: dict, expnum: int, band: str, out: str, accounting: dict | None) -> dict:
            """Products, lineage, QA rows and the batch accounting into the archive."""
            from cosmodm_ops.airflow.nightly_tasks import register_task

            return register_task(plan, expnum, band, out, accounting)

        @task(map_index_template="exp {{ expnum }}", outlets=[SINGLE_EPOCH_ASSET])
        def qa_gate(plan: dict, expnum: int, registered: dict) -> dict:
            """Accept, or quarantine with reasons (the task is then skipped, with a note)."""
            from cosmodm_ops.airflow.nightly_tasks import qa_gate_task

            return qa_gate_task(plan, expnum, registered)

        registered = register(plan, expnum, band, out, run.output)
        run >> registered
        return qa_gate(plan, expnum, registered)

    @task(trigger_rule="all_done")
    def summary(plan: dict, exposures: list[dict]) -> dict:
        """Counts and the HTML QA report of the night, filed in the archive."""
        from cosmodm_ops.airflow.nightly_tasks import summary_task

        return summary_task(plan, exposures)

    p = plan_night()
    found = discover(p)
    moved = TransferOperator(task_id="transfer", site=SITE, items=transfer_items(p))
    raws = register_raw(p, found)
    jobs = plan_jobs(p, found)
    found >> moved >> raws >> jobs
    gates = exposure.partial(plan=p).expand_kwargs(jobs)
    gates >> summary(p, found)
