"""Airflow glue of ``dags/reprocess_campaign.py``: task bodies call cosmodm_ops.workflows.campaign.

Outcomes are translated here, once: bad input (``CampaignInputError``) fails the task without retry;
an unreachable archive raises so Airflow retries. The HITL steps are subclasses of the standard
provider's operators that write the operator's answer (who, when, what) into the campaign tables
and the archive before the usual HITL behaviour (a rejected approval skips everything after it).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator, HITLOperator
from airflow.sdk import get_current_context
from airflow.sdk.exceptions import AirflowFailException

__all__ = [
    "CampaignAdjudicationOperator",
    "CampaignApprovalOperator",
    "ContinueOrAbortOperator",
    "adjudication_needed_task",
    "chunk_array",
    "fail_on_bad_input",
    "failure_gate_task",
    "note_run_campaign",
    "plan_task",
    "prepare_chunks_task",
    "record_chunk_task",
    "responder",
    "summary_task",
    "validate_task",
]

log = logging.getLogger(__name__)


def fail_on_bad_input(func: Any, *args: Any, **kwargs: Any) -> Any:
    """``func(*args, **kwargs)``; its ``CampaignInputError`` fails the task without a retry (bad input)."""
    from cosmodm_ops.campaign import CampaignInputError

    try:
        return func(*args, **kwargs)
    except CampaignInputError as err:
        raise AirflowFailException(str(err)) from err


def _where(params: dict[str, Any]) -> dict[str, str]:
    return {"survey": str(params.get("survey") or "demo"), "site": str(params.get("site") or "local")}


def _form(params: dict[str, Any]) -> dict[str, Any]:
    """The form's params as a campaign request (empty form fields mean 'not given')."""
    from cosmodm_ops.campaign import CampaignRequest

    fields = CampaignRequest.__dataclass_fields__
    return {k: v for k, v in params.items() if k in fields and v not in ("", None, [])}


def validate_task(params: dict[str, Any]) -> dict[str, Any]:
    """Every field and override checked before anything runs (bad input: failed, no retry)."""
    from cosmodm_ops.campaign import parse_request

    return fail_on_bad_input(parse_request, _form(params)).to_dict()


def plan_task(request: dict[str, Any], run_id: str) -> dict[str, Any]:
    """Select, preview, create the campaign (awaiting approval, or a dry-run record). Idempotent per run."""
    from cosmodm_ops.workflows.campaign import create_campaign

    row = fail_on_bad_input(create_campaign, request, source=f"airflow:{run_id}", awaiting_approval=True,
                             created_by="reprocess_campaign")
    note_run_campaign(run_id, row["id"])
    log.info("campaign %s (%s)\n%s", row["id"], row["state"], row["preview_markdown"])
    return {"campaign": int(row["id"]), "state": row["state"], "dry_run": row["state"] == "dry_run",
            "preview_markdown": row["preview_markdown"], **_where(request)}


def note_run_campaign(run_id: str | None, campaign: int) -> None:
    """The campaign id goes into this task's OpenLineage events (``cosmodm_campaign`` run facet)."""
    from cosmodm_ops.airflow.lineage import note_campaign

    if run_id:
        note_campaign(run_id, campaign)


def _run_id() -> str | None:
    try:
        return str(get_current_context()["run_id"])
    except Exception:  # noqa: BLE001 - outside a task (tests): no lineage to tag
        return None


def responder(event: dict[str, Any]) -> str:
    """Who answered a HITL step, from the operator's event (name, else id, else 'unknown')."""
    user = event.get("responded_by_user") or {}
    return str(user.get("name") or user.get("id") or "unknown") if isinstance(user, dict) else str(user)


class CampaignApprovalOperator(ApprovalOperator):
    """Approve or reject a campaign's preview; the answer moves the campaign (planned | rejected)."""

    template_fields = (*ApprovalOperator.template_fields, "campaign")

    def __init__(self, *, campaign: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.campaign = campaign

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        from cosmodm_ops.campaign import CampaignState
        from cosmodm_ops.workflows.campaign import store_for

        plan = self.campaign
        chosen = (event.get("chosen_options") or [""])[0]
        store = store_for(plan["survey"], plan["site"])
        who, when = responder(event), event.get("responded_at")
        if chosen == self.APPROVE:
            store.set_state(plan["campaign"], CampaignState.PLANNED, note=f"approved by {who} at {when}")
        else:
            store.move_items(plan["campaign"], ["planned"], _item_state("cancelled"), note="campaign rejected")
            store.set_state(plan["campaign"], CampaignState.REJECTED, note=f"rejected by {who} at {when}")
        return super().execute_complete(context, event)


def _item_state(name: str) -> Any:
    from cosmodm_ops.campaign import ItemState

    return ItemState(name)


def prepare_chunks_task(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """One entry per chunk with planned items of the earliest open stage (``ready_chunks``: downstream
    stages wait for a later round): the array's command and size (and the chunk file)."""
    from cosmodm_ops.workflows.campaign import prepare_chunk, ready_chunks

    note_run_campaign(_run_id(), plan["campaign"])
    specs = []
    for chunk in ready_chunks(plan["campaign"], survey=plan["survey"], site=plan["site"]):
        spec = prepare_chunk(plan["campaign"], chunk, survey=plan["survey"], site=plan["site"])
        if spec:
            specs.append({**spec, "campaign": plan["campaign"], **_where(plan)})
    log.info("campaign %s: %d chunk(s) to run", plan["campaign"], len(specs))
    return specs


def chunk_array(task_id: str, site: str, specs: Any) -> Any:
    """The job arrays of the chunk specs: ``<task_id>_submit`` submits them all over ONE connection
    (``ArraySubmitOperator``: one SSH login per site), then ``<task_id>``, an ``ArrayJobOperator`` mapped
    over their ids, watches each with one deferrable task (the triggerer's shared poller: one batched
    status command per site and poll). Without the arrays layer: a local emulated array per chunk.

    Either returns, per chunk, ``[{"index", "job_id", "state", "exit_code", "elapsed_s", "max_rss_mb"}]``.
    """
    try:
        from cosmodm_ops.airflow import ArrayJobOperator  # type: ignore[attr-defined]
    except ImportError:
        ArrayJobOperator = None  # the arrays branch is not merged yet
    pool: dict[str, str] = {}
    if os.environ.get("COSMODM_POOLS", "").lower() in {"1", "true", "yes"}:
        from cosmodm_ops.batch.base import pool_name

        pool = {"pool": pool_name(site)}
    if ArrayJobOperator is not None:
        from cosmodm_ops.airflow.arrays import ArraySubmitOperator
        from cosmodm_ops.config import site_queue

        arrays = specs.map(lambda s: {"command": s["command"], "array_size": s["array_size"]})
        ids = ArraySubmitOperator(task_id=f"{task_id}_submit", site=site, arrays=arrays)
        # partial() does not run the operator's __init__ when the DAG is parsed: the site's queue goes in here
        queue = {"queue": q} if (q := site_queue(site)) else {}
        return ArrayJobOperator.partial(task_id=task_id, site=site, **pool, **queue).expand_kwargs(ids.output).output

    from airflow.sdk import task

    @task(task_id=task_id, **pool)
    def local_array(spec: dict[str, Any]) -> list[dict[str, Any]]:
        """An emulated job array with local processes (no batch system)."""
        from cosmodm_ops.campaign import LocalArrayExecutor

        return LocalArrayExecutor(max_parallel=2).run(spec["chunk_file"], spec["array_size"])

    return local_array.expand(spec=specs)


def record_chunk_task(pair: Any) -> dict[str, int]:
    """States, retries, registration and QA of one chunk's array results."""
    from cosmodm_ops.workflows.campaign import record_chunk

    spec, results = pair
    ctx = get_current_context()
    note_run_campaign(ctx["run_id"], spec["campaign"])
    info = {"dag_id": ctx["dag"].dag_id, "run_id": ctx["run_id"], "task_id": ctx["ti"].task_id}
    counts = record_chunk(spec["campaign"], spec, list(results or []), ctx=info, survey=spec["survey"],
                          site=spec["site"])
    log.info("campaign %s chunk %s: %s", spec["campaign"], spec["chunk"], counts)
    _chunk_lineage(spec)
    return counts


def _chunk_lineage(spec: dict[str, Any]) -> None:
    """OpenLineage inputs/outputs of the chunk's registered items (never fails the task)."""
    from pathlib import Path

    from cosmodm_ops.airflow.lineage import report_manifest_lineage
    from cosmodm_ops.workflows.campaign import store_for

    try:
        store = store_for(spec["survey"], spec["site"])
        keys = set(spec.get("keys") or [])
        for it in store.items(spec["campaign"], chunk=int(spec["chunk"]), state="done"):
            if it["product_ids"] and (not keys or it["item_key"] in keys):
                report_manifest_lineage(store.archive, it["product_ids"], Path(it["out"]) / "manifest.json")
    except Exception as err:  # noqa: BLE001 - lineage is reported, not required
        log.warning("lineage not reported: %s", err)


def failure_gate_task(plan: dict[str, Any]) -> bool:
    """True (and the campaign paused) when the failure rate is above the campaign's threshold."""
    from cosmodm_ops.campaign import CampaignState
    from cosmodm_ops.workflows.campaign import failure_rate, store_for

    store = store_for(plan["survey"], plan["site"])
    camp = store.get(plan["campaign"])
    limit = float(camp["params"].get("max_failure_rate", 0.25))
    rate = failure_rate(plan["campaign"], survey=plan["survey"], site=plan["site"])
    log.info("campaign %s: failure rate %.0f%% (pause above %.0f%%)", plan["campaign"], 100 * rate, 100 * limit)
    if rate > limit and camp["state"] == "running":
        store.set_state(plan["campaign"], CampaignState.PAUSED, note=f"failure rate {rate:.0%} above {limit:.0%}")
        return True
    return False


class ContinueOrAbortOperator(HITLOperator):
    """A paused campaign: ``continue`` (the guard counts from here) or ``abort`` (cancel what is left)."""

    template_fields = (*HITLOperator.template_fields, "campaign")

    def __init__(self, *, campaign: Any, **kwargs: Any) -> None:
        super().__init__(options=["continue", "abort"], **kwargs)
        self.campaign = campaign

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        from cosmodm_ops.campaign import CampaignState
        from cosmodm_ops.workflows.campaign import cancel, continue_after_pause, store_for

        plan, who = self.campaign, responder(event)
        if (event.get("chosen_options") or [""])[0] == "abort":
            cancel(plan["campaign"], survey=plan["survey"], site=plan["site"])
        else:
            continue_after_pause(plan["campaign"], who, survey=plan["survey"], site=plan["site"])
            store_for(plan["survey"], plan["site"]).set_state(plan["campaign"], CampaignState.RUNNING,
                                                              note=f"continued by {who}")
        return super().execute_complete(context, event)


def adjudication_needed_task(plan: dict[str, Any]) -> str | None:
    """Markdown listing the borderline items awaiting a decision, or None (the HITL step is skipped)."""
    from cosmodm_ops.workflows.campaign import show

    info = show(plan["campaign"], survey=plan["survey"], site=plan["site"])
    if not info["borderline"] or info["state"] not in ("running", "planned"):
        return None
    return "Borderline QA in campaign {}:\n\n{}\n".format(plan["campaign"],
                                                          "\n".join(f"* `{k}`" for k in info["borderline"]))


class CampaignAdjudicationOperator(HITLOperator):
    """accept / quarantine / rerun for the campaign's borderline items (decision, who, when recorded)."""

    template_fields = (*HITLOperator.template_fields, "campaign")

    def __init__(self, *, campaign: Any, **kwargs: Any) -> None:
        from airflow.sdk import Param

        kwargs.pop("params", None)  # the DAG's form params do not belong in this question
        super().__init__(options=["accept", "quarantine", "rerun"],
                         params={"override": Param({}, type="object", title="Override for a rerun",
                                                   description='e.g. {"single_epoch.detect_thresh": 2.0}')},
                         **kwargs)
        self.campaign = campaign

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        from cosmodm_ops.campaign import adjudicate
        from cosmodm_ops.workflows.campaign import show, store_for

        plan, who = self.campaign, responder(event)
        decision = (event.get("chosen_options") or ["accept"])[0]
        override = (event.get("params_input") or {}).get("override") or None
        store = store_for(plan["survey"], plan["site"])
        for key in show(plan["campaign"], survey=plan["survey"], site=plan["site"])["borderline"]:
            adjudicate(store, plan["campaign"], key, decision, who, override)
        return super().execute_complete(context, event)


def summary_task(plan: dict[str, Any]) -> dict[str, Any]:
    """Finish the campaign (done when nothing is open) and return its one-line summary."""
    from cosmodm_ops.workflows.campaign import finish

    note_run_campaign(_run_id(), plan["campaign"])
    result = finish(plan["campaign"], survey=plan["survey"], site=plan["site"])
    log.info("campaign %s: %s", plan["campaign"], result)
    return result
