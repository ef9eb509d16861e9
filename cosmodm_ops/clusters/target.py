"""One candidate, one job: ``run_target`` runs the follow-up of a single candidate into its own folder.

The entry point behind ``cosmodm clusters target`` (the ``cluster_followup`` campaign's batch item).
This is the image-level branch only (``warps``: :func:`cosmodm_ops.clusters.chain.run_chain`); the
catalogue-level branch and the command come from the campaign side of issue 17.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cosmodm_ops.clusters.finder import Candidate

__all__ = ["run_target"]


def run_target(candidate: Candidate, out: str | os.PathLike[str], *, warps: str | os.PathLike[str] | None = None,
               catalog: str | os.PathLike[str] | None = None, config: Any = None) -> dict[str, Any]:
    """Follow up one candidate into ``out`` (result.json and the products); returns the result.json dict."""
    if warps is not None:
        from cosmodm_ops.clusters.chain import run_chain

        return run_chain(candidate, Path(out), Path(warps), config)
    msg = "run_target: give warps= (image level); the catalogue level is not in this branch"
    raise ValueError(msg)
