"""
### reprocess_campaign: an operator-triggered reprocessing campaign

Trigger from the form (or `POST /api/v2/dags/reprocess_campaign/dagRuns` with the same fields as `conf`).

* **validate**: every field and config override checked against the schema (key, expected type, file).
* **plan**: items selected from the archive (nights, exposures, bands, tiles or an RA/Dec box, QA verdict,
  stale lineage, made-by version); the impact preview (items by stage/night/band/tile, skipped, core-hours
  from earlier runs' accounting, bytes, products superseded, what becomes stale). `dry_run` ends here.
* **approve**: a Human-in-the-loop approval showing the preview (Required Actions, or the HITL REST API);
  *Reject* ends the campaign `rejected`, nothing is submitted.
* **chunk_array** (mapped: one job array per chunk) -> **record** (states, retries, registration of each
  done item's manifest as a new version, QA verdicts).
* **failure_gate** -> **continue_or_abort** (HITL) when the failure rate passes `max_failure_rate`.
* **adjudication_needed** -> **adjudicate** (HITL: accept / quarantine / rerun with an override) for items
  whose QA is within `qa_borderline` of a threshold.
* **retry_chunks** -> **retry_array** -> **retry_record**: failed items with retries left, and reruns.
* **downstream_chunks** -> **downstream_array** -> **downstream_record**: the next stage (each round runs
  the earliest stage with open items: a coadd after its images, a calibration after its coadds).
* **summary**: the campaign's counts; `cosmodm campaign show ID` follows it from a terminal.

Campaign arrays run in the site pools (`COSMODM_POOLS=1`) with a priority below the nightly DAG's.
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import DAG, Param, task

from cosmodm_ops.airflow.campaign_tasks import (
    CampaignAdjudicationOperator,
    CampaignApprovalOperator,
    ContinueOrAbortOperator,
    chunk_array,
)

SITE = os.environ.get("COSMODM_SITE", "local")
_DATES = {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$"}

with DAG(
    dag_id="reprocess_campaign",
    doc_md=__doc__,
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=4,
    # nightly work first: absolute weight 0 sits below every nightly task (>= 1)
    default_args={"retries": 1, "retry_delay": pendulum.duration(minutes=1), "owner": "calibration",
                  "priority_weight": 0, "weight_rule": "absolute"},
    tags=["cosmodm", "campaign", "reprocessing"],
    params={
        "name": Param("", type="string", title="Campaign name", maxLength=200),
        "description": Param("", type="string", title="Description", description="Why this campaign runs."),
        "survey": Param("demo", type="string", title="Survey", description="include/configs/surveys/<survey>.yaml",
                        examples=["demo", "des", "cfhtls", "ps1"]),
        "stage": Param("single_epoch", type="string", title="Stage", description="What to redo.",
                       enum=["single_epoch", "coadd", "calibrate", "single_epoch+downstream"]),
        "nights": Param([], type="array", items=_DATES, title="Nights", description="YYYY-MM-DD; empty: any."),
        "night_from": Param(None, type=["null", "string"], title="From night", description="YYYY-MM-DD (inclusive)."),
        "night_to": Param(None, type=["null", "string"], title="To night", description="YYYY-MM-DD (inclusive)."),
        "expnums": Param([], type="array", items={"type": "integer"}, title="Exposure numbers"),
        "bands": Param([], type="array", items={"type": "string"}, title="Bands", examples=[["g", "r"]]),
        "tiles": Param([], type="array", items={"type": "string"}, title="Tiles", description="Names on the tiling."),
        "box": Param(None, type=["null", "array"], items={"type": "number"}, minItems=4, maxItems=4,
                     title="RA/Dec box", description="[RA_MIN, RA_MAX, DEC_MIN, DEC_MAX] in degrees, on the tiling."),
        "tiling": Param(None, type=["null", "string"], title="Tiling", description="Default: the survey's."),
        "qa": Param("any", type="string", title="QA verdict", enum=["any", "pass", "fail", "quarantined"]),
        "stale": Param(False, type="boolean", title="Everything stale",
                       description="Only items downstream of a superseded product (what `archive stale` reports)."),
        "stale_from": Param(None, type=["null", "string"], title="Stale from product",
                            description="Downstream of this superseded product (id, archive path or sha256)."),
        "from_version": Param(None, type=["null", "string"], title="Made by version",
                              description="Items whose current products have this pipeline version."),
        "from_config_hash": Param(None, type=["null", "string"], title="Made by config hash"),
        "target_version": Param("v1", type="string", title="Target pipeline version", pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$"),
        "overrides": Param({}, type="object", title="Config overrides",
                           description='Checked against the config schema, e.g. {"single_epoch.detect_thresh": 3.0}.'),
        "site": Param(SITE, type="string", title="Compute site", description="include/configs/sites/<site>.yaml"),
        "priority": Param(1, type="integer", minimum=1, maximum=100, title="Priority", description="1 = lowest."),
        "chunk_size": Param(100, type="integer", minimum=1, maximum=10000, title="Chunk size",
                            description="Items per job array (one task per chunk)."),
        "max_retries": Param(1, type="integer", minimum=0, maximum=10, title="Retries per item"),
        "qa_borderline": Param(0.05, type="number", minimum=0, maximum=1, title="Borderline QA band",
                               description="A check within this fraction of its threshold asks an operator."),
        "max_failure_rate": Param(0.25, type="number", minimum=0, maximum=1, title="Pause above failure rate"),
        "queue": Param(False, type="boolean", title="Queue behind an overlapping campaign"),
        "dry_run": Param(False, type="boolean", title="Dry run", description="Only the preview; nothing runs."),
    },
) as dag:

    @task
    def validate(params=None) -> dict:
        """Every field and override checked (bad input fails here, nothing created)."""
        from cosmodm_ops.airflow.campaign_tasks import validate_task

        return validate_task(dict(params or {}))

    @task
    def plan(request: dict, run_id=None) -> dict:
        """Selection, impact preview, the campaign rows (awaiting approval, or a dry-run record)."""
        from cosmodm_ops.airflow.campaign_tasks import plan_task

        return plan_task(request, run_id)

    @task.short_circuit
    def not_dry_run(planned: dict) -> bool:
        """A dry run ends after the preview."""
        return not planned["dry_run"]

    @task
    def start(planned: dict) -> list[dict]:
        """One spec per chunk: the array's command and size."""
        from cosmodm_ops.airflow.campaign_tasks import prepare_chunks_task

        return prepare_chunks_task(planned)

    @task
    def record(pair) -> dict:
        """States, retries, registration and QA of one chunk."""
        from cosmodm_ops.airflow.campaign_tasks import record_chunk_task

        return record_chunk_task(pair)

    @task.short_circuit(ignore_downstream_trigger_rules=False, trigger_rule="all_done")
    def failure_gate(planned: dict) -> bool:
        """Pause (and ask) when the failure rate is above the threshold."""
        from cosmodm_ops.airflow.campaign_tasks import failure_gate_task

        return failure_gate_task(planned)

    @task.short_circuit(ignore_downstream_trigger_rules=False, trigger_rule="none_failed")
    def adjudication_needed(planned: dict):
        """The borderline-QA items awaiting a decision (none: the HITL step is skipped)."""
        from cosmodm_ops.airflow.campaign_tasks import adjudication_needed_task

        return adjudication_needed_task(planned)

    @task(trigger_rule="none_failed")
    def retry_chunks(planned: dict) -> list[dict]:
        """Chunks of the items left planned: retries and reruns."""
        from cosmodm_ops.airflow.campaign_tasks import prepare_chunks_task

        return prepare_chunks_task(planned)

    @task
    def retry_record(pair) -> dict:
        """States of the retried items."""
        from cosmodm_ops.airflow.campaign_tasks import record_chunk_task

        return record_chunk_task(pair)

    @task(trigger_rule="none_failed")
    def downstream_chunks(planned: dict) -> list[dict]:
        """Chunks of the next stage (single_epoch+downstream), and whatever the retry round left."""
        from cosmodm_ops.airflow.campaign_tasks import prepare_chunks_task

        return prepare_chunks_task(planned)

    @task
    def downstream_record(pair) -> dict:
        """States of the downstream items."""
        from cosmodm_ops.airflow.campaign_tasks import record_chunk_task

        return record_chunk_task(pair)

    @task(trigger_rule="all_done")
    def summary(planned: dict) -> dict:
        """The campaign's counts (done when nothing is open)."""
        from cosmodm_ops.airflow.campaign_tasks import summary_task

        return summary_task(planned)

    planned = plan(validate())
    approve = CampaignApprovalOperator(
        task_id="approve", campaign=planned, subject="Approve reprocessing campaign?",
        body="{{ ti.xcom_pull(task_ids='plan')['preview_markdown'] }}")
    specs = start(planned)
    not_dry_run(planned) >> approve >> specs
    arrays = chunk_array("chunk_array", SITE, specs)
    recorded = record.expand(pair=specs.zip(arrays))
    gate = failure_gate(planned)
    recorded >> gate
    ask = ContinueOrAbortOperator(task_id="continue_or_abort", campaign=planned,
                                  subject="Campaign paused: failure rate above its threshold",
                                  body="{{ ti.xcom_pull(task_ids='plan')['preview_markdown'] }}")
    needed = adjudication_needed(planned)
    gate >> ask >> needed
    adjudicate = CampaignAdjudicationOperator(task_id="adjudicate", campaign=planned,
                                              subject="Borderline QA: accept, quarantine or rerun?",
                                              body="{{ ti.xcom_pull(task_ids='adjudication_needed') }}")
    again = retry_chunks(planned)
    needed >> adjudicate >> again
    retried = retry_record.expand(pair=again.zip(chunk_array("retry_array", SITE, again)))
    later = downstream_chunks(planned)
    retried >> later
    downstream_record.expand(pair=later.zip(chunk_array("downstream_array", SITE, later))) >> summary(planned)
