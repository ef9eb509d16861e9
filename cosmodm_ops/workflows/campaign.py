"""Reprocessing campaigns, as plain functions: what ``cosmodm campaign`` and ``dags/reprocess_campaign.py`` do.

No Airflow import here. The flow: :func:`plan_campaign` (validate, select, preview; bad input
raises :class:`~cosmodm_ops.campaign.CampaignInputError` and creates nothing) ->
:func:`create_campaign` -> per chunk :func:`prepare_chunk` (the chunk file and the array's
command) -> the array runs -> :func:`record_chunk` -> :func:`finish`. :func:`run_local` does the
whole loop without Airflow (``campaign submit --local``), retries included.
"""

from __future__ import annotations

import json
import logging
import shlex
import time
from typing import Any

from cosmodm_ops.campaign import (
    CampaignInputError,
    CampaignRequest,
    CampaignState,
    CampaignStore,
    ItemState,
    build_preview,
    estimate_core_hours,
    parse_request,
    record_outcomes,
    select_items,
    target_config,
    write_chunk_file,
)

__all__ = [
    "campaign_summary",
    "cancel",
    "create_campaign",
    "failure_rate",
    "finish",
    "plan_campaign",
    "prepare_chunk",
    "ready_chunks",
    "record_chunk",
    "request_of",
    "resume",
    "retry_failed",
    "run_local",
    "show",
    "store_for",
]

log = logging.getLogger(__name__)
_INITIALISED: set[str] = set()


def _archive(survey: str, site: str) -> Any:
    from cosmodm_ops.archive import Archive
    from cosmodm_ops.config import load_config
    from cosmodm_ops.workflows.nightly import archive_settings

    return Archive(*archive_settings(load_config(survey, site=site)))


def store_for(survey: str = "demo", site: str = "local") -> CampaignStore:
    """The campaign store on the archive of a site (``COSMODM_DB`` overrides), schema brought up to date."""
    archive = _archive(survey, site)
    if archive.db_url not in _INITIALISED:  # one migration check per process and database
        archive.init()
        _INITIALISED.add(archive.db_url)
    return CampaignStore(archive)


def plan_campaign(params: dict[str, Any]) -> tuple[CampaignRequest, list[Any], Any, str]:
    """Validate and select: ``(request, items, preview, target config hash)``.

    Raises :class:`CampaignInputError` for bad input, an empty selection ("0 items match") unless
    ``dry_run``, and when every item is already up to date under the target version (nothing to do).
    """
    from cosmodm_ops.config import config_hash

    req = parse_request(params)
    target_hash = config_hash(target_config(req))
    store = store_for(req.survey, req.site)
    items = select_items(store.archive, req, target_hash)
    preview = build_preview(req, items, store.archive)
    if not items and not req.dry_run:
        msg = f"0 items match the selection ({_describe(req)}); no campaign created"
        raise CampaignInputError(msg)
    if items and preview.to_run == 0 and not req.dry_run:
        msg = (f"nothing to do: all {len(items)} selected item(s) are already at target version "
               f"{req.target_version!r} with this configuration (give another target_version or overrides)")
        raise CampaignInputError(msg)
    return req, items, preview, target_hash


def _describe(req: CampaignRequest) -> str:
    parts = [f"survey {req.survey}", f"stage {req.stage}"]
    for name in ("nights", "night_from", "night_to", "expnums", "bands", "tiles", "box", "stale_from",
                 "from_version", "from_config_hash"):
        value = getattr(req, name)
        if value:
            parts.append(f"{name} {value}")
    if req.qa != "any":
        parts.append(f"qa {req.qa}")
    if req.stale:
        parts.append("stale")
    return ", ".join(parts)


def create_campaign(params: dict[str, Any], *, source: str | None = None, awaiting_approval: bool = False,
                    created_by: str | None = None) -> dict[str, Any]:
    """Plan and create a campaign (``dry_run``: a record of the preview only). Returns its row."""
    req, items, preview, target_hash = plan_campaign(params)
    est, _ = estimate_core_hours([it for it in items if not it.up_to_date])
    state = (CampaignState.DRY_RUN if req.dry_run else
             CampaignState.AWAITING_APPROVAL if awaiting_approval else CampaignState.PLANNED)
    store = store_for(req.survey, req.site)
    cid = store.create(req, items, preview.to_dict(), state=state, source=source, config_hash=target_hash,
                       created_by=created_by, estimates=est)
    row = store.get(cid)
    row["preview_markdown"] = preview.to_markdown()
    return row


def request_of(camp: dict[str, Any]) -> CampaignRequest:
    """The campaign's request (the stored params, less the bookkeeping keys)."""
    fields = CampaignRequest.__dataclass_fields__
    return CampaignRequest(**{k: v for k, v in camp["params"].items() if k in fields})


def _store_of(cid: int, survey: str = "demo", site: str = "local") -> tuple[CampaignStore, dict[str, Any]]:
    store = store_for(survey, site)
    return store, store.get(cid)


def prepare_chunk(cid: int, chunk: int, *, survey: str = "demo", site: str = "local") -> dict[str, Any] | None:
    """Write the chunk file of the chunk's planned items and mark them submitted.

    Returns ``{"chunk", "chunk_file", "array_size", "command", "keys"}`` (the array's one command),
    or None when nothing of the chunk is left to run (a resumed campaign).
    """
    store, camp = _store_of(cid, survey, site)
    if camp["state"] in (CampaignState.CANCELLED.value, CampaignState.REJECTED.value, CampaignState.PAUSED.value):
        return None
    items = store.items(cid, chunk=chunk, state=ItemState.PLANNED.value)
    if not items:
        return None
    cfg = target_config(request_of(camp))
    for it in items:
        if it["stage"] == "calibrate":  # the coadds as they are now (a downstream chunk made them)
            from cosmodm_ops.campaign.selection import current_coadd_folders

            it["spec"] = {**it["spec"], "coadds": current_coadd_folders(store.archive, camp["survey"], it["tile"],
                                                                        it["spec"].get("bands") or [])}
    path = write_chunk_file(camp, items, cfg, chunk)
    for it in items:
        store.update_item(cid, it["item_key"], ItemState.SUBMITTED)
    if camp["state"] != CampaignState.RUNNING.value:
        store.set_state(cid, CampaignState.RUNNING)
    command = shlex.split(cfg.site.batch.python) + ["campaign", "element", "--chunk-file", str(path)]
    return {"chunk": chunk, "chunk_file": str(path), "array_size": len(items), "command": command,
            "keys": [it["item_key"] for it in items]}


def ready_chunks(cid: int, *, survey: str = "demo", site: str = "local") -> list[int]:
    """The planned chunks of the earliest stage that still has open items (a coadd waits for its images,
    a calibration for its coadds: every chunk holds one stage). What one Airflow round may run at once."""
    from cosmodm_ops.campaign.store import STAGE_ORDER

    store, _ = _store_of(cid, survey, site)
    open_items = store.items(cid, state=[ItemState.PLANNED.value, ItemState.SUBMITTED.value,
                                         ItemState.RUNNING.value])
    if not open_items:
        return []
    first = min(STAGE_ORDER[it["stage"]] for it in open_items)
    return sorted({int(it["chunk"]) for it in open_items if it["state"] == ItemState.PLANNED.value
                   and STAGE_ORDER[it["stage"]] == first and it["chunk"] is not None})


def record_chunk(cid: int, prepared: dict[str, Any], results: list[dict[str, Any]], *, ctx: dict[str, Any] | None = None,
                 survey: str = "demo", site: str = "local") -> dict[str, int]:
    """Apply a chunk's element results (states, retries, registration, QA); return counts."""
    store, _ = _store_of(cid, survey, site)
    return record_outcomes(store, cid, int(prepared["chunk"]), results,
                           {**(ctx or {}), "chunk_file": prepared["chunk_file"]})


def failure_rate(cid: int, *, survey: str = "demo", site: str = "local") -> float:
    """Failed / (done + failed) of the items that ended since the last "continue" (0 when none did)."""
    store, camp = _store_of(cid, survey, site)
    counts = _counts(store.items(cid))
    base = camp["params"].get("continued_at") or {}
    failed = counts.get("failed", 0) - int(base.get("failed", 0))
    ended = counts.get("done", 0) + counts.get("failed", 0) - int(base.get("ended", 0))
    return failed / ended if ended > 0 else 0.0


def continue_after_pause(cid: int, who: str | None = None, *, survey: str = "demo", site: str = "local") -> None:
    """An operator chose to go on: the failure-rate guard counts from here."""
    store, _ = _store_of(cid, survey, site)
    counts = _counts(store.items(cid))
    store.update_params(cid, continued_at={"failed": counts.get("failed", 0),
                                           "ended": counts.get("done", 0) + counts.get("failed", 0), "by": who})


def _counts(items: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for it in items:
        out[it["state"]] = out.get(it["state"], 0) + 1
    return out


def run_local(cid: int, *, max_parallel: int = 2, survey: str = "demo", site: str = "local",
              executor: Any = None) -> dict[str, Any]:
    """Run every planned chunk with local processes, retries included, then :func:`finish`.

    Above the campaign's ``max_failure_rate`` the campaign is paused (``resume`` continues it).
    """
    from cosmodm_ops.campaign import LocalArrayExecutor

    store, camp = _store_of(cid, survey, site)
    if camp["state"] == CampaignState.PLANNED.value:
        store.set_state(cid, CampaignState.RUNNING)
    executor = executor or LocalArrayExecutor(max_parallel=max_parallel)
    limit = float(camp["params"].get("max_failure_rate", 0.25))
    for _round in range(int(camp["max_retries"]) + 2):
        chunks = store.chunks(cid)
        if not chunks:
            break
        for chunk in chunks:
            if store.get(cid)["state"] != CampaignState.RUNNING.value:
                return campaign_summary(cid, survey=survey, site=site)
            prepared = prepare_chunk(cid, chunk, survey=survey, site=site)
            if prepared is None:
                continue
            results = executor.run(prepared["chunk_file"], prepared["array_size"])
            counts = record_chunk(cid, prepared, results, survey=survey, site=site)
            log.info("campaign %s chunk %s: %s", cid, chunk, counts)
            if failure_rate(cid, survey=survey, site=site) > limit:
                store.set_state(cid, CampaignState.PAUSED, note=f"failure rate above {limit:.0%}: paused")
                return campaign_summary(cid, survey=survey, site=site)
    return finish(cid, survey=survey, site=site)


def finish(cid: int, *, survey: str = "demo", site: str = "local", note: str | None = None) -> dict[str, Any]:
    """Mark the campaign done when no item is open (with ``note``, e.g. what it made); return the summary."""
    store, camp = _store_of(cid, survey, site)
    open_items = store.items(cid, state=[ItemState.PLANNED.value, ItemState.SUBMITTED.value,
                                         ItemState.RUNNING.value])
    if not open_items and camp["state"] in (CampaignState.RUNNING.value, CampaignState.PLANNED.value):
        store.set_state(cid, CampaignState.DONE, note=note)
    return campaign_summary(cid, survey=survey, site=site)


def campaign_summary(cid: int, *, survey: str = "demo", site: str = "local") -> dict[str, Any]:
    """The campaign's one-line result: ``{"campaign", "state", "items", "done", "failed", "skipped",
    "superseded", "stale_downstream", "core_hours_estimated", "core_hours_used"}`` (plus counts)."""
    from cosmodm_ops.campaign.selection import downstream_of

    store, camp = _store_of(cid, survey, site)
    items = store.items(cid)
    counts = _counts(items)
    replaced = sorted({int(p) for it in items if it["state"] == "done" for p in it["spec"].get("replaces", [])})
    new_ids = {int(p) for it in items for p in it["product_ids"]}
    stale = set(downstream_of(store.archive, replaced)) - new_ids - set(replaced) if replaced else set()
    return {"campaign": int(cid), "state": store.get(cid)["state"], "items": len(items),
            "done": counts.get("done", 0), "failed": counts.get("failed", 0), "skipped": counts.get("skipped", 0),
            "superseded": sum(int(it["superseded"] or 0) for it in items), "stale_downstream": len(stale),
            "core_hours_estimated": round(float(camp["core_hours_estimated"] or 0.0), 6),
            "core_hours_used": round(sum(float(it["core_h_used"] or 0.0) for it in items), 6),
            "planned": counts.get("planned", 0), "cancelled": counts.get("cancelled", 0)}


def show(cid: int, *, survey: str = "demo", site: str = "local") -> dict[str, Any]:
    """Progress by state and by site, ETA, core-hours used vs estimated, failures with their log ends."""
    store, camp = _store_of(cid, survey, site)
    items = store.items(cid)
    summary = campaign_summary(cid, survey=survey, site=site)
    ended = [it for it in items if it["state"] in ("done", "failed") and it["elapsed_s"]]
    left = sum(1 for it in items if it["state"] in ("planned", "submitted", "running"))
    mean = sum(float(it["elapsed_s"]) for it in ended) / len(ended) if ended else None
    parallel = max(1, int(camp["params"].get("max_parallel") or 1))
    return {**summary, "name": camp["name"], "stage": camp["stage"], "target_version": camp["target_version"],
            "by_state": _counts(items), "by_site": {camp["site"]: _counts(items)},
            "eta_s": round(mean * left / parallel, 1) if mean is not None else None, "note": camp["note"],
            "failures": [{"key": it["item_key"], "attempts": it["attempts"], "exit_code": it["exit_code"],
                          "diagnostics": it["diagnostics"]} for it in items if it["state"] == "failed"],
            "borderline": [it["item_key"] for it in items if it["qa_verdict"] == "borderline" and not it["decision"]],
            "preview": camp["preview"], "created_at": camp["created_at"], "updated_at": camp["updated_at"]}


def cancel(cid: int, *, survey: str = "demo", site: str = "local") -> dict[str, Any]:
    """Cancel: open items become cancelled (a running element finishes; its result is ignored)."""
    store, camp = _store_of(cid, survey, site)
    if camp["state"] in ("done", "cancelled", "rejected", "dry_run"):
        msg = f"campaign {cid} is {camp['state']}: nothing to cancel"
        raise CampaignInputError(msg)
    store.move_items(cid, ["planned", "submitted", "running"], ItemState.CANCELLED, note="campaign cancelled")
    store.set_state(cid, CampaignState.CANCELLED, note="cancelled by an operator")
    return campaign_summary(cid, survey=survey, site=site)


def resume(cid: int, *, survey: str = "demo", site: str = "local") -> dict[str, Any]:
    """After a crash, a pause or a scheduler restart: redo only what is not done.

    Items left submitted or running (their array's result never recorded) go back to planned;
    done, failed and skipped items stay. A cancelled, rejected or finished campaign cannot resume.
    """
    store, camp = _store_of(cid, survey, site)
    if camp["state"] in ("done", "cancelled", "rejected", "dry_run"):
        hint = "; use retry-failed to rerun its failed items" if camp["state"] == "done" else ""
        msg = f"campaign {cid} is {camp['state']}: it cannot be resumed{hint}"
        raise CampaignInputError(msg)
    if camp["state"] == "queued" and camp["queued_behind"]:
        blocker = store.get(int(camp["queued_behind"]))
        if blocker["state"] not in ("done", "cancelled", "rejected"):
            msg = f"campaign {cid} is queued behind campaign {blocker['id']} ({blocker['state']}): not yet"
            raise CampaignInputError(msg)
        store.set_state(cid, CampaignState.PLANNED, note=f"campaign {blocker['id']} ended")
    n = store.move_items(cid, ["submitted", "running"], ItemState.PLANNED, note="resumed")
    state = store.get(cid)["state"]
    if state == "paused":
        continue_after_pause(cid, survey=survey, site=site)
        store.set_state(cid, CampaignState.RUNNING, note="resumed by an operator")
    log.info("campaign %s: %d unfinished item(s) back to planned", cid, n)
    return campaign_summary(cid, survey=survey, site=site)


def retry_failed(cid: int, *, survey: str = "demo", site: str = "local") -> dict[str, Any]:
    """Failed items back to planned with their attempts reset (the campaign reopens)."""
    store, camp = _store_of(cid, survey, site)
    if camp["state"] in ("cancelled", "rejected", "dry_run"):
        msg = f"campaign {cid} is {camp['state']}: its items cannot be retried"
        raise CampaignInputError(msg)
    n = store.move_items(cid, ["failed"], ItemState.PLANNED, note="retry-failed", reset_attempts=True)
    if n == 0:
        msg = f"campaign {cid} has no failed items"
        raise CampaignInputError(msg)
    if camp["state"] in ("done", "paused"):
        store.set_state(cid, CampaignState.RUNNING, note=f"retry-failed: {n} item(s)")
    return campaign_summary(cid, survey=survey, site=site)


def wait_until(cid: int, states: set[str], timeout: float, *, survey: str = "demo", site: str = "local") -> str:
    """Poll the campaign row until its state is in ``states`` (``show --watch`` and the demo)."""
    store, _ = _store_of(cid, survey, site)
    deadline = time.monotonic() + timeout
    while True:
        state = store.get(cid)["state"]
        if state in states or time.monotonic() > deadline:
            return state
        time.sleep(1.0)


def to_json(obj: Any) -> str:
    """Compact JSON (the CLI's ``--json``)."""
    return json.dumps(obj, sort_keys=True, default=str)
