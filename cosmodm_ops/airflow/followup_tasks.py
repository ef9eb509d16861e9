"""Airflow glue of ``dags/cluster_followup.py``: task bodies call :mod:`cosmodm_ops.workflows.followup`.

Bad input (:class:`~cosmodm_ops.campaign.CampaignInputError`: a candidate list with a missing or
non-numeric column, a duplicate name, an input that does not exist) fails the task without retry, with
the message naming the file, row and column. :class:`ClusterDecisionOperator` is the standard provider's
:class:`~airflow.providers.standard.operators.hitl.HITLOperator` with the options confirm / reject /
unsure, mapped over the candidates at or above the threshold; the answer, who gave it and when go to the
candidate's campaign item (and a QA row of its picture) before the usual HITL behaviour.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.providers.standard.operators.hitl import HITLOperator
from airflow.sdk import get_current_context

from cosmodm_ops.airflow.campaign_tasks import fail_on_bad_input, note_run_campaign, responder

__all__ = ["ClusterDecisionOperator", "collect_task", "decisions_task", "finalize_task", "plan_task", "validate_task"]

log = logging.getLogger(__name__)


def _ctx() -> dict[str, Any]:
    ctx = get_current_context()
    return {"dag_id": ctx["dag"].dag_id, "run_id": ctx["run_id"], "task_id": ctx["ti"].task_id}


def validate_task(params: dict[str, Any]) -> dict[str, Any]:
    """The form's fields and the candidate list checked before anything is created."""
    from cosmodm_ops.workflows.followup import validate_followup

    req = fail_on_bad_input(validate_followup, params)
    log.info("%d candidate(s) from %s on %s", len(req["names"]), req["candidates"],
             req["warps"] or ", ".join(req["catalog"]))
    return req


def plan_task(request: dict[str, Any], run_id: str) -> dict[str, Any]:
    """The follow-up campaign (one item per candidate); idempotent per DAG run."""
    from cosmodm_ops.workflows.followup import create_followup

    plan = fail_on_bad_input(create_followup, request, source=f"airflow:{run_id}", created_by="cluster_followup")
    note_run_campaign(run_id, plan["campaign"])
    log.info("campaign %s: %d candidate(s), label %s", plan["campaign"], plan["candidates"], plan["label"])
    return plan


def collect_task(plan: dict[str, Any]) -> dict[str, Any]:
    """Every candidate's result; pictures filed; no_coverage / no_warps listed (not failures)."""
    from cosmodm_ops.workflows.followup import collect

    ctx = _ctx()
    note_run_campaign(ctx["run_id"], plan["campaign"])
    res = collect(plan, ctx)
    log.info("campaign %s: ok %d, to confirm %s, no_coverage %s, no_warps %s, error %s, failed %s",
             plan["campaign"], len(res["ok"]), res["to_confirm"], res["no_coverage"], res["no_warps"], res["error"],
             res["failed"])
    return res


def decisions_task(plan: dict[str, Any], collected: dict[str, Any]) -> list[dict[str, Any]]:
    """The questions (subject, body, candidate) of the candidates at or above the threshold."""
    from cosmodm_ops.workflows.followup import decision_requests

    return decision_requests(plan, collected)


def finalize_task(plan: dict[str, Any]) -> dict[str, Any]:
    """The cluster catalogue product with the decisions, lineage to every input; the campaign done."""
    from cosmodm_ops.workflows.followup import finalize

    ctx = _ctx()
    note_run_campaign(ctx["run_id"], plan["campaign"])
    out = finalize(plan, ctx)
    log.info("campaign %s: catalogue product %s (%s)", plan["campaign"], out["catalogue_product"],
             out["catalogue_path"])
    return out


class ClusterDecisionOperator(HITLOperator):
    """confirm / reject / unsure for one candidate (mapped: ``.partial(...).expand_kwargs(questions)``).

    Parameters
    ----------
    candidate : dict
        ``{"campaign", "survey", "site", "name", "key", "picture", "significance"}`` (from
        :func:`~cosmodm_ops.workflows.followup.decision_requests`).
    subject, body
        The question and its markdown (numbers, the inspection picture, a link to its product page).
    """

    def __init__(self, *, candidate: dict[str, Any], **kwargs: Any) -> None:
        from cosmodm_ops.workflows.followup import OPTIONS

        kwargs.pop("params", None)  # the DAG's form params do not belong in this question
        super().__init__(options=list(OPTIONS), **kwargs)
        self.candidate = candidate

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        from cosmodm_ops.workflows.followup import record_decision

        if "error" not in event:
            verdict = (event.get("chosen_options") or ["unsure"])[0]
            when = event.get("responded_at")
            when = when.isoformat() if hasattr(when, "isoformat") else when
            record_decision(self.candidate, verdict, responder(event), when)
        return super().execute_complete(context, event)
