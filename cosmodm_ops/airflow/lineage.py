"""OpenLineage from the tasks that file products: inputs and outputs named by their archive paths.

The archive path of a product is a pure function of its identification tags
(``survey/stage/version/night-or-tile/...``), so an OpenLineage dataset named by it is named by
the tags. Tasks hand the files to Airflow's hook-lineage collector; the openlineage provider
turns them into the task's input and output datasets (``file`` namespace) on completion, through
whatever transport is configured (a file or the console on the embedded defaults).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from airflow.sdk import BaseHook

__all__ = ["ArchiveLineageHook", "report_lineage", "report_manifest_lineage"]

log = logging.getLogger(__name__)


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
