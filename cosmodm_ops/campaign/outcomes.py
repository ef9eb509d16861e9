"""What happens when a chunk's array ends: states and retries per item, registration, QA verdicts.

* exit 0 or 3 (done, or done with some CCDs failed): the item's manifest is registered
  (:meth:`Archive.register_manifest`) with run details naming the campaign (``job_name``
  ``campaign-<id>/<item key>``, ``dag_id`` ``reprocess_campaign``); same version tag: the archive's
  revision logic supersedes the replaced product; another version: the item's earlier products
  of the same kind and unit are marked superseded by the new ones (``Archive.supersede_by_unit``).
* exit 65 (bad input): failed at once, no retry; anything else: retried while ``attempts <=
  max_retries`` (the item goes back to ``planned``), then failed with the end of its log.
* cluster_followup items: exit 0 with a ``result.json`` is done (its status, e.g. ``no_coverage``, in the
  diagnostics); nothing is registered here (the follow-up DAG files the pictures and the catalogue).
* QA: each done item's ``qa.json`` checks are compared with their thresholds; a value within
  ``qa_borderline`` (relative) of its threshold makes the item ``borderline`` (an operator decides:
  :func:`adjudicate`), a failed check beyond that ``fail`` (quarantined, as the nightly gate does).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from cosmodm_ops.archive import schema as S
from cosmodm_ops.campaign.execute import log_tail
from cosmodm_ops.campaign.request import CampaignInputError
from cosmodm_ops.campaign.states import ItemState
from cosmodm_ops.campaign.store import CampaignStore, now

__all__ = ["DECISIONS", "adjudicate", "qa_verdict", "record_outcomes", "register_item"]

log = logging.getLogger(__name__)

EXIT_DONE = (0, 3)
EXIT_BAD_INPUT = 65
DECISIONS = ("accept", "quarantine", "rerun")


def qa_verdict(out: str | Path, borderline: float) -> tuple[str, list[str]]:
    """``(pass | borderline | fail, reasons)`` from an item's ``qa.json`` checks."""
    try:
        qa = json.loads((Path(out) / "qa.json").read_text())
    except (OSError, ValueError):
        return "fail", [f"no readable qa.json in {out}"]
    verdict, reasons = "pass", []
    for check in qa.get("checks", []):
        value, threshold = check.get("value"), check.get("threshold")
        failed = str(check.get("verdict", "")).lower() in ("fail", "failed")
        near = (isinstance(value, (int, float)) and isinstance(threshold, (int, float)) and threshold != 0
                and abs(value - threshold) <= borderline * abs(threshold))
        if near:
            verdict = "borderline" if verdict != "fail" else verdict
            reasons.append(f"{check.get('name')}={value:.4g} within {borderline:.0%} of threshold {threshold:.4g}")
        elif failed:
            verdict = "fail"
            reasons.append(f"{check.get('name')}={value} (threshold {threshold})")
    return verdict, reasons


def register_item(store: CampaignStore, camp: dict[str, Any], item: dict[str, Any], out: str,
                  run_info: dict[str, Any]) -> dict[str, Any]:
    """Register one done item's manifest; return the columns to store on its row."""
    archive = store.archive
    manifest = Path(out) / "manifest.json"
    ids = archive.register_manifest(manifest, run_info)
    replaces = [int(x) for x in item["spec"].get("replaces") or []]
    crossed = archive.supersede_by_unit(replaces, ids, camp["target_version"]) if replaces else 0
    superseded = crossed
    if replaces:
        p = S.products
        with store.tx() as conn:
            superseded = int(conn.execute(sa.select(sa.func.count()).select_from(p).where(
                p.c.id.in_(replaces), p.c.state == "superseded")).scalar_one())
    run_id = archive.product(ids[0])["run_id"] if ids else None
    cpu = (json.loads(manifest.read_text()).get("cpu") or {}).get("total_s")
    return {"product_ids": ids, "run_id": run_id, "superseded": superseded,
            "core_h_used": float(cpu) / 3600.0 if cpu else None}


def _run_info(camp: dict[str, Any], item: dict[str, Any], res: dict[str, Any], ctx: dict[str, Any]) -> dict[str, Any]:
    info = {"dag_id": ctx.get("dag_id") or "reprocess_campaign", "run_id": ctx.get("run_id") or f"campaign-{camp['id']}",
            "task_id": ctx.get("task_id") or f"chunk{item['chunk']}", "try_number": int(item["attempts"]),
            "job_name": f"campaign-{camp['id']}/{item['item_key']}", "batch_job_id": str(res.get("job_id") or ""),
            "site": camp["site"], "state": "done", "exit_code": int(res.get("exit_code") or 0)}
    return {k: v for k, v in info.items() if v not in (None, "")}


def _outcome(store: CampaignStore, camp: dict[str, Any], item: dict[str, Any], res: dict[str, Any],
             ctx: dict[str, Any]) -> str:
    cid, key, borderline = camp["id"], item["item_key"], float(camp["params"].get("qa_borderline", 0.05))
    out = (json.loads(Path(ctx["chunk_file"]).read_text())["elements"][int(res["index"])]["out"]
           if ctx.get("chunk_file") else item["out"])
    attempts = int(item["attempts"]) + 1
    common = {"attempts": attempts, "job_id": str(res.get("job_id") or ""), "exit_code": res.get("exit_code"),
              "elapsed_s": res.get("elapsed_s"), "max_rss_mb": res.get("max_rss_mb"), "out": out}
    rc = res.get("exit_code")
    if item["stage"] == "cluster_followup" and rc == 0 and (Path(out) / "result.json").exists():
        return _followup_done(store, camp, item, res, out, common)
    if rc in EXIT_DONE and (Path(out) / "manifest.json").exists():
        try:
            done = register_item(store, camp, {**item, "attempts": attempts}, out,
                                 _run_info(camp, {**item, "attempts": attempts}, res, ctx))
        except ValueError as err:  # manifest that does not match its files: bad data
            store.update_item(cid, key, ItemState.FAILED, **common, diagnostics=f"not registered: {err}")
            return "failed"
        verdict, reasons = qa_verdict(out, borderline)
        if verdict == "fail":
            _quarantine(store.archive, camp, item, reasons)
        if done["core_h_used"] is None and res.get("cpu_s"):
            done["core_h_used"] = float(res["cpu_s"]) / 3600.0
        store.update_item(cid, key, ItemState.DONE, **common, **done, qa_verdict=verdict,
                          diagnostics="; ".join(reasons) or None)
        return "done"
    diag = f"exit code {rc}, state {res.get('state')}\n{log_tail(out)}"
    if rc != EXIT_BAD_INPUT and attempts <= int(camp["max_retries"]):
        store.update_item(cid, key, ItemState.PLANNED, **common, diagnostics=diag)
        return "retry"
    store.update_item(cid, key, ItemState.FAILED, **common, diagnostics=diag)
    return "failed"


def _followup_done(store: CampaignStore, camp: dict[str, Any], item: dict[str, Any], res: dict[str, Any], out: str,
                   common: dict[str, Any]) -> str:
    """A follow-up candidate's job wrote its result.json: done, whatever the finder said (no_coverage, no_warps
    and error are results, named in the diagnostics; the DAG's collect step registers its pictures)."""
    try:
        doc = json.loads((Path(out) / "result.json").read_text())
    except ValueError as err:
        store.update_item(camp["id"], item["item_key"], ItemState.FAILED, **common,
                          diagnostics=f"unreadable result.json: {err}")
        return "failed"
    cpu = doc.get("cpu_s") or res.get("cpu_s")
    note = None if doc.get("status") == "ok" else f"{doc.get('status')}: {doc.get('message') or ''}".strip()
    store.update_item(camp["id"], item["item_key"], ItemState.DONE, **common, diagnostics=note,
                      core_h_used=float(cpu) / 3600.0 if cpu else None)
    return "done"


def _quarantine(archive: Any, camp: dict[str, Any], item: dict[str, Any], reasons: list[str]) -> None:
    sel = ({"survey": camp["survey"], "night": item["night"], "expnum": int(item["expnum"]),
            "version": camp["target_version"]} if item["stage"] == "single_epoch" else
           {"survey": camp["survey"], "tile": item["tile"], "band": item["band"], "version": camp["target_version"]})
    sel = {k: v for k, v in sel.items() if v is not None}
    archive.quarantine(sel, [f"campaign {camp['id']}: {r}" for r in reasons] or [f"campaign {camp['id']}: QA failed"])


def record_outcomes(store: CampaignStore, cid: int, chunk: int, results: list[dict[str, Any]],
                    ctx: dict[str, Any] | None = None) -> dict[str, int]:
    """Apply a chunk's array results (one dict per element, by ``index``); return counts by outcome.

    Elements already recorded (an item no longer submitted/running/planned) are left alone, so
    recording the same results twice changes nothing.
    """
    ctx = dict(ctx or {})
    camp = store.get(cid)
    elements = json.loads(Path(ctx["chunk_file"]).read_text())["elements"] if ctx.get("chunk_file") else None
    by_key = {it["item_key"]: it for it in store.items(cid, chunk=chunk)}
    counts = {"done": 0, "failed": 0, "retry": 0, "ignored": 0}
    for res in results:
        key = elements[int(res["index"])]["key"] if elements else None
        item = by_key.get(key) if key else next((it for it in by_key.values()
                                                 if it["array_index"] == int(res["index"])), None)
        if item is None or item["state"] not in ("planned", "submitted", "running"):
            counts["ignored"] += 1
            continue
        counts[_outcome(store, camp, item, res, ctx)] += 1
    return counts


def adjudicate(store: CampaignStore, cid: int, key: str, decision: str, who: str,
               override: dict[str, Any] | None = None) -> dict[str, Any]:
    """Record an operator's decision on a borderline item (archive QA row + quarantine, item row).

    ``accept``: kept; ``quarantine``: its exposure/tile is quarantined with the decision as reason;
    ``rerun``: the item goes back to ``planned``; ``override`` (config keys, dotted or nested, checked
    against the config schema like the campaign's own) is stored in its spec and applied to its next
    run on top of the campaign's overrides. A finished campaign reopens (running) for the rerun.
    """
    from cosmodm_ops.campaign.request import validate_overrides
    from cosmodm_ops.campaign.states import CampaignState

    if decision not in DECISIONS:
        msg = f"decision {decision!r}: expected one of {', '.join(DECISIONS)}"
        raise CampaignInputError(msg)
    camp = store.get(cid)
    item = next((it for it in store.items(cid) if it["item_key"] == key), None)
    if item is None:
        msg = f"campaign {cid}: no item {key!r}"
        raise CampaignInputError(msg)
    if override and decision != "rerun":
        msg = f"campaign {cid} item {key}: an override only goes with the decision 'rerun', not {decision!r}"
        raise CampaignInputError(msg)
    nested = validate_overrides(camp["survey"], camp["site"], override) if override else None
    when = now()
    archive = store.archive
    for pid in item["product_ids"][:1]:
        archive.record_qa([{"name": "campaign_adjudication", "value": float(cid), "threshold": None,
                            "verdict": decision}], product=pid, run_id=item["run_id"])
    if decision == "quarantine":
        _quarantine(archive, camp, item, [f"operator {who} quarantined at {when}: {item['diagnostics']}"])
    values: dict[str, Any] = {"decision": decision, "decided_by": who, "decided_at": when}
    new = None
    if decision == "rerun":
        new = ItemState.PLANNED
        if nested:
            values["spec"] = {**item["spec"], "override": nested}
    row = store.update_item(cid, key, new, **values)
    if decision == "rerun" and camp["state"] == CampaignState.DONE.value:
        store.set_state(cid, CampaignState.RUNNING, note=f"rerun of {key} decided by {who}")
    return row
