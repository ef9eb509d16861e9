"""
### tile_coadd: one run per sky tile and band

Started by the nightly DAG's asset events (`cosmodm://single_epoch/accepted`, one partition per
`tile:band` that gained accepted inputs), or by hand with the form (tile, bands, version).

* **plan**: the tile and bands of this run (partition key `TILE:BAND`, or the params).
* **coadd** (mapped, one per band): batch job `cosmodm coadd run` on the site: gather accepted
  single-epoch images overlapping the tile from the archive, relative photometric calibration
  (ensemble zeropoints; worst images dropped until bright-star repeatability meets the QA
  threshold), SWarp coadd, PSF homogenization to a common Moffat, homogenized coadd.
* **register** then **qa_gate** per band: products and lineage into the archive; a band failing
  QA is quarantined (task skipped) and not used by the calibration.
* **calibrate**: once every band of the tile has a coadd: chi-square detection image, dual-image
  SExtractor catalogs, stellar-locus absolute calibration; registered and gated like the bands.
  The workers' `COSMODM_PHOTOMETRIC_REFCAT` gives the J anchor; for a simulated survey,
  `COSMODM_TRUTH_CATALOG` (the simulator's `truth/objects.fits`, when it exists) adds
  completeness and purity against truth by magnitude to the calibration's QA.
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import DAG, Asset, Param, PartitionedAssetTimetable, task, task_group

from cosmodm_ops.airflow import BatchJobOperator

SITE = os.environ.get("COSMODM_SITE", "local")
SINGLE_EPOCH_ASSET = Asset("cosmodm://single_epoch/accepted", group="cosmodm")
COADD_ASSET = Asset("cosmodm://coadd/calibrated", group="cosmodm")

with DAG(
    dag_id="tile_coadd",
    doc_md=__doc__,
    schedule=PartitionedAssetTimetable(assets=SINGLE_EPOCH_ASSET),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=4,
    default_args={"retries": 2, "retry_delay": pendulum.duration(minutes=2), "owner": "calibration"},
    tags=["cosmodm", "coadd"],
    params={
        "tile": Param("", type="string", title="Tile", description="Empty: from the asset partition key."),
        "bands": Param([], type="array", title="Bands", description="Empty: the partition's band."),
        "survey": Param("demo", type="string", title="Survey"),
        "site": Param(SITE, type="string", title="Compute site"),
        "version": Param("v1", type="string", title="Pipeline version"),
    },
) as dag:

    @task
    def plan_tile(params=None, dag_run=None) -> dict:
        """The tile and bands of this run, and one coadd job per band."""
        from cosmodm_ops.airflow.coadd_tasks import plan_tile_task

        return plan_tile_task(dict(params or {}), getattr(dag_run, "partition_key", None))

    @task
    def band_jobs(plan: dict) -> list[dict]:
        return plan["jobs"]

    @task_group(group_id="band")
    def band(band: str, command: list[str], out: str, plan: dict):
        run = BatchJobOperator(task_id="coadd", site=SITE, stage="coadd", command=command, job_label=band,
                               map_index_template="{{ task.job_label }}")

        @task
        def register(plan: dict, band: str, out: str, accounting: dict | None) -> dict:
            from cosmodm_ops.airflow.coadd_tasks import register_band_task

            return register_band_task(plan, band, out, accounting)

        @task
        def qa_gate(plan: dict, band: str, registered: dict) -> dict:
            from cosmodm_ops.airflow.coadd_tasks import gate_band_task

            return gate_band_task(plan, band, registered)

        registered = register(plan, band, out, run.output)
        run >> registered
        return qa_gate(plan, band, registered)

    @task(trigger_rule="all_done")
    def calibration_job(plan: dict) -> list[str]:
        """The multi-band command, or skip while some band of the tile has no accepted coadd yet."""
        from cosmodm_ops.airflow.coadd_tasks import calibration_command_task

        return calibration_command_task(plan)

    @task(outlets=[COADD_ASSET])
    def register_calibration(plan: dict, accounting: dict | None) -> dict:
        from cosmodm_ops.airflow.coadd_tasks import register_calibration_task

        return register_calibration_task(plan, accounting)

    p = plan_tile()
    gates = band.partial(plan=p).expand_kwargs(band_jobs(p))
    command = calibration_job(p)
    gates >> command
    calibrate = BatchJobOperator(task_id="calibrate", site=SITE, stage="calibrate", command=command)
    register_calibration(p, calibrate.output)
