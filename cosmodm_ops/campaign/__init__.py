"""Operator-triggered reprocessing campaigns: request, selection, preview, state machine, chunks, outcomes.

No Airflow import here (``dags/reprocess_campaign.py`` wires :mod:`cosmodm_ops.workflows.campaign`).

* :mod:`~cosmodm_ops.campaign.request`: the request and its validation (config overrides included);
* :mod:`~cosmodm_ops.campaign.selection`: items from the archive, keyed idempotently, up-to-date check;
* :mod:`~cosmodm_ops.campaign.preview`: the impact preview (dataclass, markdown, JSON);
* :mod:`~cosmodm_ops.campaign.schema` / :mod:`~cosmodm_ops.campaign.store`: the ``campaign`` and
  ``campaign_item`` tables (migration 0002) and their API;
* :mod:`~cosmodm_ops.campaign.states`: explicit states and legal transitions;
* :mod:`~cosmodm_ops.campaign.execute`: chunk files, the element command, a local array;
* :mod:`~cosmodm_ops.campaign.outcomes`: results -> states, retries, registration, QA adjudication.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Public name -> submodule. Imported on first use (PEP 562), so ``cosmodm --help`` and a batch job's
#: ``cosmodm campaign element`` never pay for SQLAlchemy and the archive.
_WHERE = {
    "ARRAY_INDEX_ENV": "execute", "ChunkExecutor": "execute", "LocalArrayExecutor": "execute",
    "write_chunk_file": "execute",
    "DECISIONS": "outcomes", "adjudicate": "outcomes", "qa_verdict": "outcomes", "record_outcomes": "outcomes",
    "Preview": "preview", "build_preview": "preview", "estimate_core_hours": "preview",
    "STAGES": "request", "CampaignInputError": "request", "CampaignRequest": "request",
    "parse_request": "request", "target_config": "request", "validate_overrides": "request",
    "Item": "selection", "item_key": "selection", "select_items": "selection",
    "CampaignState": "states", "IllegalTransition": "states", "ItemState": "states",
    "CampaignStore": "store",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"cosmodm_ops.campaign.{_WHERE[name]}"), name)
    msg = f"module 'cosmodm_ops.campaign' has no attribute {name!r}"
    raise AttributeError(msg)


__all__ = [
    "ARRAY_INDEX_ENV",
    "DECISIONS",
    "STAGES",
    "CampaignInputError",
    "CampaignRequest",
    "CampaignState",
    "CampaignStore",
    "ChunkExecutor",
    "IllegalTransition",
    "Item",
    "ItemState",
    "LocalArrayExecutor",
    "Preview",
    "adjudicate",
    "build_preview",
    "estimate_core_hours",
    "item_key",
    "parse_request",
    "qa_verdict",
    "record_outcomes",
    "select_items",
    "target_config",
    "validate_overrides",
    "write_chunk_file",
]
