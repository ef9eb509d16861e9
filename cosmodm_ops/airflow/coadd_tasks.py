"""Task bodies of ``dags/tile_coadd.py``: call cosmodm_ops.workflows.coadd, translate outcomes."""

from __future__ import annotations

from typing import Any

from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

__all__ = [
    "calibration_command_task",
    "gate_band_task",
    "plan_tile_task",
    "register_band_task",
    "register_calibration_task",
]


def plan_tile_task(params: dict[str, Any], partition_key: str | None) -> dict[str, Any]:
    from cosmodm_ops.workflows.coadd import plan_tile

    try:
        return plan_tile(params, partition_key)
    except ValueError as err:  # a bad tile/band/config: no retry
        raise AirflowFailException(str(err)) from err


def register_band_task(plan: dict[str, Any], band: str, out: str, accounting: dict[str, Any] | None) -> dict:
    from cosmodm_ops.workflows.coadd import register_band

    try:
        result = register_band(plan, band, out, accounting)
    except ValueError as err:
        raise AirflowFailException(f"tile {plan['tile']} band {band}: cannot register {out}: {err}") from err
    _lineage(plan, result.pop("product_ids", []), f"{out}/manifest.json")
    return result


def _lineage(plan: dict[str, Any], product_ids: list[int], manifest: str) -> None:
    """OpenLineage inputs/outputs of a registration (never fails the task)."""
    import logging

    from cosmodm_ops.airflow.lineage import report_manifest_lineage
    from cosmodm_ops.workflows.coadd import TilePlan

    try:
        report_manifest_lineage(TilePlan(**plan).archive(), product_ids, manifest)
    except Exception as err:  # noqa: BLE001 - lineage is reported, not required
        logging.getLogger(__name__).warning("lineage not reported: %s", err)


def gate_band_task(plan: dict[str, Any], band: str, registered: dict[str, Any]) -> dict[str, Any]:
    from cosmodm_ops.workflows.coadd import gate_band

    verdict = gate_band(plan, band, registered)
    if not verdict["accepted"]:
        raise AirflowSkipException(f"tile {plan['tile']} band {band} quarantined: " + "; ".join(verdict["reasons"]))
    return verdict


def calibration_command_task(plan: dict[str, Any]) -> list[str]:
    from cosmodm_ops.workflows.coadd import calibration_command

    cmd = calibration_command(plan)
    if cmd is None:
        raise AirflowSkipException(f"tile {plan['tile']}: not every band has an accepted coadd yet")
    return cmd


def register_calibration_task(plan: dict[str, Any], accounting: dict[str, Any] | None) -> dict[str, Any]:
    from cosmodm_ops.workflows.coadd import register_calibration

    result = register_calibration(plan, accounting)
    _lineage(plan, result.pop("product_ids", []), f"{result.pop('out', '')}/manifest.json")
    if not result["accepted"]:
        raise AirflowSkipException(f"tile {plan['tile']} calibration quarantined: " + "; ".join(result["reasons"]))
    return result
