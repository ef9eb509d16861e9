"""Provenance: when a product was made, and by which code and tools."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

__all__ = ["git_commit", "utc_now", "versions"]


def utc_now() -> str:
    """The current UTC time, ISO 8601 to the second (``2026-11-23T04:05:06+00:00``)."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def git_commit() -> str:
    """The commit of the checkout this package runs from, or ``"unknown"`` (an installed wheel, no git)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                             text=True, timeout=10, check=False)
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def versions() -> dict[str, str]:
    """Versions a product depends on: the Astromatic tools, this package, its git commit, numpy, astropy, fitsio."""
    import astropy
    import fitsio
    import numpy as np

    import cosmodm_ops
    from cosmodm_ops.astromatic import tool_versions

    v = {k: str(val) for k, val in tool_versions().items()}
    v.update(cosmodm_ops=getattr(cosmodm_ops, "__version__", "0"), git_commit=git_commit(),
             numpy=np.__version__, astropy=astropy.__version__, fitsio=fitsio.__version__)
    return v
