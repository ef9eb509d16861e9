"""JSON for QA files and manifests: numpy values made plain, non-finite floats as null, atomic writes."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["jsonable", "write_json"]


def jsonable(obj: Any) -> Any:
    """``obj`` with numpy scalars and arrays as Python values, paths as strings, NaN and inf as ``None``.

    Returns a new object; ``obj`` is not modified.
    """
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def write_json(path: str | os.PathLike[str], doc: Any, *, indent: int | None = 2) -> Path:
    """Write ``jsonable(doc)`` to ``path`` atomically (a hidden ``.part`` file, then ``os.replace``)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(json.dumps(jsonable(doc), indent=indent))
    os.replace(tmp, path)
    return path
