"""
### cluster_followup: confirm a cluster-candidate list, with a person deciding each detection

Trigger from the form (or `POST /api/v2/dags/cluster_followup/dagRuns` with the same fields as `conf`).
A follow-up is a campaign (stage `cluster_followup`, one item per candidate): it appears in the survey
pages' Campaigns with its progress, and `cosmodm campaign show ID` follows it from a terminal.

* **validate**: the candidate list (FITS or CSV: NAME, RA, DEC [, POS_ERR]; a missing or non-numeric column
  or a duplicate name fails the run here, naming the file, row and column), the input (`warps`: a folder of
  PS1-like warps, or `catalog`: an object catalogue), the site.
* **plan**: the campaign and its items.
* **chunk_array** (one job array per chunk; each element `cosmodm clusters target --name N ...`) -> **record**;
  **retry_chunks** -> **retry_array** -> **retry_record** for failed elements with retries left.
* **collect**: each candidate's result; its inspection picture filed as a product; candidates outside the
  input (`no_coverage`, `no_warps`) listed in the campaign's result, not failures.
* **confirm** (Human-in-the-loop, one per candidate at or above the significance threshold): the numbers and
  the inspection picture (pseudo-colour cut-out with members and BCG beside the richness-vs-z curve), then
  confirm / reject / unsure. Below the threshold: `confirmed = no`, nobody is asked.
* **finalize**: the cluster catalogue (FITS: name, ra, dec, z_phot, z_err, richness, significance, confirmed,
  who_confirmed, ...) filed in the archive with lineage to every input and picture; the campaign done.
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import DAG, Param, task

from cosmodm_ops.airflow.campaign_tasks import chunk_array
from cosmodm_ops.airflow.followup_tasks import ClusterDecisionOperator

SITE = os.environ.get("COSMODM_SITE", "local")

with DAG(
    dag_id="cluster_followup",
    doc_md=__doc__,
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=4,
    default_args={"retries": 1, "retry_delay": pendulum.duration(minutes=1), "owner": "science",
                  "priority_weight": 0, "weight_rule": "absolute"},
    tags=["cosmodm", "campaign", "clusters"],
    params={
        "name": Param("", type="string", title="Follow-up name", maxLength=200),
        "description": Param("", type="string", title="Description"),
        "candidates": Param("", type="string", title="Candidate list",
                            description="Path of a FITS or CSV list: NAME, RA, DEC (degrees) [, POS_ERR arcmin]."),
        "catalog": Param([], type="array", items={"type": "string"}, title="Object catalogue (catalogue level)",
                         description="One merged table, or BAND=PATH SExtractor dual-image catalogues."),
        "warps": Param(None, type=["null", "string"], title="Warps folder (image level)",
                       description="A folder of PS1-like warps; give this or the catalogue."),
        "pseudocolour": Param(None, type=["null", "string"], title="Pseudo-colour PNG (catalogue level)",
                              description="The tile's pseudo-colour image, for the inspection picture."),
        "pseudocolour_wcs": Param(None, type=["null", "string"], title="FITS with the PNG's WCS",
                                  description="The coadd the pseudo-colour image was made from."),
        "min_significance": Param(5.0, type="number", minimum=0, title="Significance threshold",
                                  description="At or above: a person confirms; below: confirmed = no."),
        "config": Param(None, type=["null", "string"], title="Finder settings (YAML)",
                        description="FinderConfig fields (z grid, aperture, bootstrap...); default: the built-in."),
        "survey": Param("demo", type="string", title="Survey", description="include/configs/surveys/<survey>.yaml"),
        "version": Param("v1", type="string", title="Version tag of the products",
                         pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$"),
        "site": Param(SITE, type="string", title="Compute site", description="include/configs/sites/<site>.yaml"),
        "chunk_size": Param(100, type="integer", minimum=1, maximum=10000, title="Candidates per job array"),
        "max_retries": Param(1, type="integer", minimum=0, maximum=10, title="Retries per candidate"),
    },
) as dag:

    @task
    def validate(params=None) -> dict:
        """The form's fields and the candidate list (bad input fails here, nothing created)."""
        from cosmodm_ops.airflow.followup_tasks import validate_task

        return validate_task(dict(params or {}))

    @task
    def plan(request: dict, run_id=None) -> dict:
        """The follow-up campaign: one item per candidate."""
        from cosmodm_ops.airflow.followup_tasks import plan_task

        return plan_task(request, run_id)

    @task
    def start(planned: dict) -> list[dict]:
        """One spec per chunk: the array's command and size."""
        from cosmodm_ops.airflow.campaign_tasks import prepare_chunks_task

        return prepare_chunks_task(planned)

    @task
    def record(pair) -> dict:
        """States and retries of one chunk's candidates."""
        from cosmodm_ops.airflow.campaign_tasks import record_chunk_task

        return record_chunk_task(pair)

    @task(trigger_rule="none_failed")
    def retry_chunks(planned: dict) -> list[dict]:
        """Chunks of the candidates whose job failed with retries left."""
        from cosmodm_ops.airflow.campaign_tasks import prepare_chunks_task

        return prepare_chunks_task(planned)

    @task
    def retry_record(pair) -> dict:
        """States of the retried candidates."""
        from cosmodm_ops.airflow.campaign_tasks import record_chunk_task

        return record_chunk_task(pair)

    @task(trigger_rule="none_failed")
    def collect(planned: dict) -> dict:
        """Every candidate's result; pictures filed; no_coverage / no_warps listed."""
        from cosmodm_ops.airflow.followup_tasks import collect_task

        return collect_task(planned)

    @task
    def questions(planned: dict, collected: dict) -> list[dict]:
        """One question per candidate at or above the threshold."""
        from cosmodm_ops.airflow.followup_tasks import decisions_task

        return decisions_task(planned, collected)

    @task(trigger_rule="none_failed")
    def finalize(planned: dict) -> dict:
        """The cluster catalogue product with the decisions and its lineage; the campaign done."""
        from cosmodm_ops.airflow.followup_tasks import finalize_task

        return finalize_task(planned)

    planned = plan(validate())
    specs = start(planned)
    recorded = record.expand(pair=specs.zip(chunk_array("chunk_array", SITE, specs)))
    again = retry_chunks(planned)
    recorded >> again
    retried = retry_record.expand(pair=again.zip(chunk_array("retry_array", SITE, again)))
    collected = collect(planned)
    retried >> collected
    confirm = ClusterDecisionOperator.partial(task_id="confirm").expand_kwargs(questions(planned, collected))
    confirm >> finalize(planned)
