"""OpenLineage from the tasks that file products: inputs and outputs named by their archive paths.

The archive path of a product is a pure function of its identification tags
(``survey/stage/version/night-or-tile/...``), so an OpenLineage dataset named by it is named by
the tags. Tasks hand the files to Airflow's hook-lineage collector; the openlineage provider
turns them into the task's input and output datasets (``file`` namespace) on completion, through
whatever transport is configured (a file or the console on the embedded defaults).

Campaign runs: the task bodies of ``reprocess_campaign`` note their campaign id
(:func:`note_campaign`), and :func:`campaign_run_facets`, named in ``[openlineage]
custom_run_facets`` (``AIRFLOW__OPENLINEAGE__CUSTOM_RUN_FACETS=cosmodm_ops.airflow.lineage.campaign_run_facets``;
``make demo`` sets it), adds a ``cosmodm_campaign`` run facet ``{"campaign": ID, "dag_id": ...}`` to
those tasks' OpenLineage events. The listener calls it in the process that ran the task body.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from airflow.sdk import BaseHook

__all__ = ["CAMPAIGN_FACET", "ArchiveLineageHook", "campaign_run_facets", "note_campaign", "report_lineage",
           "report_manifest_lineage"]

log = logging.getLogger(__name__)

#: Name of the run facet that carries the campaign id.
CAMPAIGN_FACET = "cosmodm_campaign"
#: run_id -> campaign id, noted by the campaign task bodies that ran in this process.
_CAMPAIGN_OF_RUN: dict[str, int] = {}


def note_campaign(run_id: str, campaign: int) -> None:
    """Remember that the Airflow run ``run_id`` is campaign ``campaign`` (for :func:`campaign_run_facets`)."""
    _CAMPAIGN_OF_RUN[str(run_id)] = int(campaign)


def campaign_run_facets(ti: Any, ti_state: Any = None) -> dict[str, Any]:
    """``[openlineage] custom_run_facets`` hook: ``{"cosmodm_campaign": facet}`` for a campaign's tasks, else {}."""
    cid = _CAMPAIGN_OF_RUN.get(str(getattr(ti, "run_id", "")))
    if cid is None:
        return {}
    from attrs import define
    from openlineage.client.facet_v2 import RunFacet

    @define
    class CampaignRunFacet(RunFacet):
        """The reprocessing campaign a task belongs to."""

        campaign: int
        dag_id: str

    return {CAMPAIGN_FACET: CampaignRunFacet(campaign=cid, dag_id=str(getattr(ti, "dag_id", "")))}


class ArchiveLineageHook(BaseHook):
    """The lineage context of archive registrations (no connection: it only names the source)."""

    conn_name_attr = "archive_conn_id"
    hook_name = "CosmoDM archive"

    def get_conn(self) -> None:  # pragma: no cover - nothing to connect to
        return None


def report_lineage(inputs: Iterable[str | Path], outputs: Iterable[str | Path]) -> tuple[int, int]:
    """Record files read and written by the running task; returns (inputs, outputs) recorded."""
    try:
        from airflow.providers.common.compat.lineage.hook import get_hook_lineage_collector
    except ImportError:  # pragma: no cover - the compat provider ships with the openlineage provider
        return 0, 0
    collector = get_hook_lineage_collector()
    hook = ArchiveLineageHook()
    n_in = n_out = 0
    for path in dict.fromkeys(str(Path(p).resolve()) for p in inputs):
        collector.add_input_asset(hook, uri=Path(path).as_uri())
        n_in += 1
    for path in dict.fromkeys(str(Path(p).resolve()) for p in outputs):
        collector.add_output_asset(hook, uri=Path(path).as_uri())
        n_out += 1
    return n_in, n_out


def report_manifest_lineage(archive: Any, product_ids: Sequence[int], manifest_path: str | Path) -> tuple[int, int]:
    """Lineage of one registered manifest: its inputs as the job saw them, its products in the archive."""
    from cosmodm_ops.archive.layout import resolve_under
    from cosmodm_ops.manifest import read_manifest

    manifest = read_manifest(manifest_path)
    inputs = [i.path for i in manifest.inputs]
    outputs = [resolve_under(Path(archive.root), archive.product(int(i))["path"]) for i in product_ids]
    n = report_lineage(inputs, outputs)
    log.info("lineage: %d input(s), %d output(s) reported", *n)
    return n
