"""Task bodies of ``dags/nightly_ingest.py``: call cosmodm_ops.workflows.nightly, translate outcomes.

Failures are sorted once, here: a quarantined exposure becomes a *skipped* task (the reasons
in its log and in the archive's quarantine table), a broken configuration or bad input fails
without retry, an unreachable archive database raises so Airflow retries.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk import get_current_context
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

__all__ = ["discover_task", "plan_jobs_task", "qa_gate_task", "register_raw_task", "register_task", "summary_task"]

log = logging.getLogger(__name__)


def _plan(plan: dict[str, Any]):
    from cosmodm_ops.workflows.nightly import NightPlan

    return NightPlan(**plan)


def discover_task(plan: dict[str, Any]) -> list[dict[str, Any]]:
    from cosmodm_ops.workflows.nightly import discover_exposures, to_jsonable

    found = to_jsonable(discover_exposures(_plan(plan)))
    for exp in found:
        if exp["problem"]:
            log.warning("exposure %s: %s (it will be quarantined)", exp["expnum"], exp["problem"])
    log.info("night %s: %d exposure(s) found", plan["night"], len(found))
    return found


def register_raw_task(plan: dict[str, Any], exposures: list[dict[str, Any]]) -> int:
    from cosmodm_ops.workflows.nightly import register_raw

    return register_raw(_plan(plan), exposures)


def plan_jobs_task(plan: dict[str, Any], exposures: list[dict[str, Any]]) -> list[dict[str, Any]]:
    from cosmodm_ops.workflows.nightly import plan_jobs

    jobs = plan_jobs(_plan(plan), exposures)
    log.info("night %s: %d single-epoch job(s) to run", plan["night"], len(jobs))
    return [{"expnum": j["expnum"], "band": j["band"], "command": j["command"], "out": j["out"]} for j in jobs]


def _label(expnum: int) -> None:
    """Label the mapped task instance by exposure number (rendered by map_index_template)."""
    try:
        get_current_context()["expnum"] = expnum  # type: ignore[typeddict-unknown-key]
    except Exception as err:  # noqa: BLE001 - labelling is cosmetic
        log.debug("cannot label the task instance: %s", err)


def register_task(plan: dict[str, Any], expnum: int, band: str, out: str,
                  accounting: dict[str, Any] | None) -> dict[str, Any]:
    from cosmodm_ops.workflows.nightly import register_exposure

    _label(expnum)
    ctx = get_current_context()
    run_info = {
        "dag_id": ctx["dag"].dag_id, "run_id": ctx["run_id"], "task_id": "exposure.single_epoch",
        "try_number": ctx["ti"].try_number, **(accounting or {}),
    }
    try:
        result = register_exposure(_plan(plan), expnum, band, out, run_info)
    except ValueError as err:  # a manifest that does not match its files: bad data, no retry
        msg = f"exposure {expnum}: cannot register {out}: {err}"
        raise AirflowFailException(msg) from err
    _lineage(plan, result.pop("product_ids", []), f"{out}/manifest.json")
    return result


def _lineage(plan: dict[str, Any], product_ids: list[int], manifest: str) -> None:
    """OpenLineage inputs/outputs of a registration (never fails the task)."""
    from cosmodm_ops.airflow.lineage import report_manifest_lineage
    from cosmodm_ops.workflows.nightly import archive_for

    try:
        report_manifest_lineage(archive_for(_plan(plan)), product_ids, manifest)
    except Exception as err:  # noqa: BLE001 - lineage is reported, not required
        log.warning("lineage not reported: %s", err)


def qa_gate_task(plan: dict[str, Any], expnum: int, registered: dict[str, Any]) -> dict[str, Any]:
    from cosmodm_ops.workflows.nightly import gate_exposure

    _label(expnum)
    verdict = gate_exposure(_plan(plan), expnum, registered)
    if not verdict["accepted"]:
        msg = f"exposure {expnum} quarantined: " + "; ".join(verdict["reasons"])
        log.warning(msg)
        raise AirflowSkipException(msg)
    ctx = get_current_context()
    keys = [f"{t}:{verdict['band']}" for t in verdict.get("tiles", [])]
    if keys:
        from airflow.sdk import Asset

        event = ctx["outlet_events"][Asset("cosmodm://single_epoch/accepted", group="cosmodm")]
        event.extra = {"night": plan["night"], "expnum": expnum, "band": verdict["band"]}
        event.add_partitions(keys)
        log.info("exposure %s accepted; tiles touched: %s", expnum, ", ".join(keys))
    return verdict


def summary_task(plan: dict[str, Any], exposures: list[dict[str, Any]]) -> dict[str, Any]:
    from cosmodm_ops.workflows.nightly import night_summary

    result = night_summary(_plan(plan), exposures)
    log.info("night %s: %s", plan["night"], result)
    # the "QA report" extra link (plugins/cosmodm_plugin.py) reads this key
    try:
        from airflow.configuration import conf

        base = conf.get("api", "base_url", fallback="").rstrip("/")
    except Exception:  # noqa: BLE001 - the link is a convenience
        base = ""
    get_current_context()["ti"].xcom_push(key="_link_QAReportLink",
                                          value=f"{base}/cosmodm/report/{plan['survey']}/{plan['night']}")
    return result
