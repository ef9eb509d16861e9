"""The survey app's request gate: at most ``limit`` requests at once per worker, downloads stream past it."""

from __future__ import annotations

import asyncio

import pytest

from cosmodm_ops.airflow.webapp_support import RequestGate


def _run(gate_limit: int | None, paths: list[str], root: str = "/cosmodm") -> tuple[int, list[str]]:
    """Send ``paths`` at once through a gate around an app that holds each request 20 ms; the most that were
    inside at one time, and the order they finished in."""
    inside, most, done = 0, 0, []

    async def app(scope, receive, send):
        nonlocal inside, most
        inside += 1
        most = max(most, inside)
        await asyncio.sleep(0.02)
        inside -= 1
        done.append(scope["path"])

    gate = RequestGate(app, gate_limit)

    async def main():
        await asyncio.gather(*(gate({"type": "http", "path": root + p, "root_path": root}, None, None)
                               for p in paths))

    asyncio.run(main())
    return most, done


def test_gate_lets_limit_requests_in_at_once_in_arrival_order():
    paths = [f"/api/night/demo/2026-02-{d:02d}" for d in range(1, 9)]
    most, done = _run(1, paths)
    assert most == 1
    assert done == ["/cosmodm" + p for p in paths]  # first come, first served
    assert _run(3, paths)[0] == 3


def test_downloads_files_and_static_stream_past_the_gate():
    most, _ = _run(1, ["/download/1", "/download/2", "/file/a/b.fits", "/static/cosmodm.js"])
    assert most == 4
    # a page whose name merely contains "download" is gated
    assert _run(1, ["/api/night/download/2026-01-01", "/api/night/download/2026-01-02"])[0] == 1
    # mounted at the root, the same rules
    assert _run(1, ["/download/1", "/download/2"], root="")[0] == 2


def test_gate_size_from_the_environment(monkeypatch):
    monkeypatch.setenv("COSMODM_UI_CONCURRENCY", "2")
    assert RequestGate(None).limit == 2
    monkeypatch.setenv("COSMODM_UI_CONCURRENCY", "0")
    with pytest.raises(ValueError, match="COSMODM_UI_CONCURRENCY=0"):
        RequestGate(None)
    monkeypatch.setenv("COSMODM_UI_CONCURRENCY", "two")
    with pytest.raises(ValueError, match="COSMODM_UI_CONCURRENCY='two'"):
        RequestGate(None)


def test_lifespan_scope_passes_untouched():
    seen = []

    async def app(scope, receive, send):
        seen.append(scope["type"])

    gate = RequestGate(app, 1)
    asyncio.run(gate({"type": "lifespan"}, None, None))
    assert seen == ["lifespan"]
    assert gate._sem is None  # the semaphore is made on the first http request, on the worker's own loop
