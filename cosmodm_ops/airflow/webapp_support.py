"""What the survey pages' routes share and that is not a route: templates, camera tables, Airflow's run states.

Split from :mod:`cosmodm_ops.airflow.webapp` (its routes); imported by it at api-server start.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

__all__ = ["HERE", "RequestGate", "camera_config", "dag_run_states", "focal_plane_of", "freeze_startup_heap",
           "pixel_scales", "preload", "templates"]

HERE = Path(__file__).with_name("ui")


def preload() -> None:
    """Import at api-server start what the pages use (not in each worker's first request): HEALPix alone is 1.5 s CPU."""
    import importlib

    for name in ("astropy.units", "astropy_healpix", "cosmodm_ops.archive.catalogs", "cosmodm_ops.cameras.layout",
                 "cosmodm_ops.config", "cosmodm_ops.ui.campaigns"):
        importlib.import_module(name)


def freeze_startup_heap() -> None:
    """Move the api-server's start-up objects out of the garbage collector's full passes (``gc.freeze``).

    An api-server worker holds ~360k long-lived objects (Airflow, FastAPI, SQLAlchemy, astropy); every full
    collection walked them all (150-230 ms here), triggered by whichever request allocated past the threshold:
    the random 200-500 ms p95 tails of the pages that build many rows (nights, tiles). Frozen objects are never
    freed, which start-up objects are not anyway; everything a request makes is collected as before. Called
    when this module is imported and again by :class:`RequestGate` at the worker's first request: Airflow goes
    on building its app after importing the plugin (270k more objects, measured with ``gc.callbacks``), so a
    freeze at import alone left most of the heap to the full passes.
    """
    import gc

    gc.collect()
    gc.freeze()


class RequestGate:
    """ASGI middleware: at most ``limit`` of the app's requests run at once in this api-server worker.

    The routes are synchronous (FastAPI runs each in a thread of its pool) and CPU-bound: SQL through
    SQLAlchemy, rows to dicts, templates, JSON. Ten of them at once in one process contend for the GIL
    (SQLite releases and retakes it at every step of a query) and overflow the connection pool; measured on
    the night JSON, 10 threads cost 24 ms of CPU per request against 9 ms one at a time. Past the gate,
    requests wait in the event loop (no thread, no CPU) and run in arrival order. Downloads, files by path
    and the static script stream and are not gated. ``limit``: ``COSMODM_UI_CONCURRENCY`` (default 1 per
    worker; ``cosmodm bench ui --concurrency N`` measures others). ``on_first_request``: called once, at the
    worker's first request through the gate (the app uses it for :func:`freeze_startup_heap`).
    """

    EXEMPT = ("/download/", "/file/", "/static/")

    def __init__(self, app: Any, limit: int | None = None, on_first_request: Any = None) -> None:
        self.app = app
        self.on_first_request = on_first_request  # e.g. freeze_startup_heap, once the api-server is fully built
        text = os.environ.get("COSMODM_UI_CONCURRENCY", "1")
        if limit is None and not text.strip().isdigit():
            msg = f"COSMODM_UI_CONCURRENCY={text!r}: give a whole number >= 1 (requests run at once per worker)"
            raise ValueError(msg)
        self.limit = int(text) if limit is None else limit
        if self.limit < 1:
            msg = f"COSMODM_UI_CONCURRENCY={self.limit}: give at least 1 (requests run at once per worker)"
            raise ValueError(msg)
        self._sem: asyncio.Semaphore | None = None  # made on the worker's own event loop, at its first request

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or self._exempt(scope):
            await self.app(scope, receive, send)
            return
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.limit)
            if self.on_first_request is not None:
                self.on_first_request()
        async with self._sem:
            await self.app(scope, receive, send)

    def _exempt(self, scope: dict[str, Any]) -> bool:
        path, root = scope.get("path", ""), scope.get("root_path", "")
        route = path[len(root):] if root and path.startswith(root) else path
        return route.startswith(self.EXEMPT)


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


def pixel_scales(cameras: Iterable[str]) -> dict[str, float]:
    """Arcsec per pixel of each named camera that has a configuration (others left out)."""
    out = {}
    for cam in set(cameras):
        cfg = camera_config(cam)
        if cfg is not None:
            out[cam] = cfg.pixel_scale
    return out


def dag_run_states(pairs: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """Airflow's state of each (dag_id, run_id), read from its metadata DB (missing: not listed)."""
    if not pairs:
        return {}
    try:
        from airflow.utils.session import create_session

        with create_session() as s:
            rows = s.execute(_dag_run_states_stmt(), {"run_ids": sorted({r for _, r in pairs})}).all()
        want = set(pairs)
        return {(d, r): str(st) for d, r, st in rows if (d, r) in want}
    except Exception:  # noqa: BLE001 - the archive pages still work without Airflow's metadata
        return {}


@lru_cache(maxsize=1)
def _dag_run_states_stmt() -> Any:
    """The statement of :func:`dag_run_states` (expanding ``run_ids``), built once: the nights pages call it per request."""
    import sqlalchemy as sa
    from airflow.models.dagrun import DagRun

    return sa.select(DagRun.dag_id, DagRun.run_id, DagRun.state).where(
        DagRun.run_id.in_(sa.bindparam("run_ids", expanding=True)))


def focal_plane_of(camera: str) -> Any:
    from cosmodm_ops.cameras.layout import focal_plane

    cam = camera_config(camera)
    try:
        return focal_plane(cam) if cam is not None else None
    except Exception:  # noqa: BLE001 - a missing camera table only loses the map
        return None
