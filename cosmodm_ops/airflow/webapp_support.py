"""What the survey pages' routes share and that is not a route: templates, camera tables, Airflow's run states.

Split from :mod:`cosmodm_ops.airflow.webapp` (its routes); imported by it at api-server start.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = ["HERE", "camera_config", "dag_run_states", "focal_plane_of", "pixel_scales", "templates"]

HERE = Path(__file__).with_name("ui")


@lru_cache(maxsize=1)
def templates() -> Any:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(HERE / "templates")), autoescape=True,
                             auto_reload=False,  # package files: no stat of each template per request
                             undefined=jinja2.StrictUndefined)
    env.filters["num"] = lambda v, fmt="{:.3g}": "" if v is None else fmt.format(v)
    env.filters["size"] = _human_size
    return env


def _human_size(n: int | None) -> str:
    if n is None:
        return ""
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


@lru_cache(maxsize=16)
def camera_config(camera: str) -> Any:
    """A camera's config (for its focal plane and pixel scale); None when unknown."""
    from cosmodm_ops.config import load_config

    try:
        return load_config(camera=camera).camera
    except Exception:  # noqa: BLE001 - an unknown camera only loses the map and the depth
        return None


def pixel_scales(rows: list[dict[str, Any]]) -> dict[str, float]:
    out = {}
    for cam in {x["camera"] for x in rows}:
        cfg = camera_config(cam)
        if cfg is not None:
            out[cam] = cfg.pixel_scale
    return out


def dag_run_states(pairs: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """Airflow's state of each (dag_id, run_id), read from its metadata DB (missing: not listed)."""
    if not pairs:
        return {}
    try:
        import sqlalchemy as sa
        from airflow.models.dagrun import DagRun
        from airflow.utils.session import create_session

        with create_session() as s:
            rows = s.execute(sa.select(DagRun.dag_id, DagRun.run_id, DagRun.state)
                             .where(DagRun.run_id.in_(sorted({r for _, r in pairs})))).all()
        want = set(pairs)
        return {(d, r): str(st) for d, r, st in rows if (d, r) in want}
    except Exception:  # noqa: BLE001 - the archive pages still work without Airflow's metadata
        return {}


def focal_plane_of(camera: str) -> Any:
    from cosmodm_ops.cameras.layout import focal_plane

    cam = camera_config(camera)
    try:
        return focal_plane(cam) if cam is not None else None
    except Exception:  # noqa: BLE001 - a missing camera table only loses the map
        return None
