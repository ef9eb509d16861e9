"""Where an exposure's CPU time goes: our own code against the Astromatic binaries.

A :class:`StageClock` lives in one process (the runner's, or one worker's call for one CCD). Each
named stage adds its wall seconds and the process's own CPU seconds (``RUSAGE_SELF``); a stage that
runs a tool through :meth:`StageClock.tool` also adds the tool's CPU seconds, which
:func:`~cosmodm_ops.astromatic.tools.run_tool` measures exactly from ``wait4``. ``record()`` gives
a small picklable dict that the runner merges over CCDs with :func:`merge_records`.

The exposure's total comes from the runner's process tree (:func:`tree_cpu`: its own CPU plus that
of every child it has reaped, worker processes included once their pool is closed), so
``own = total - tools`` holds everything that is not an Astromatic binary: worker start-up,
pickling and version probes included, even where no stage names them.
"""

from __future__ import annotations

import contextlib
import resource
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from cosmodm_ops.astromatic import ToolResult, run_tool

__all__ = ["TOOLS", "StageClock", "cpu_block", "merge_records", "self_cpu", "tree_cpu"]

#: Tools whose CPU is counted apart from ours (``<tool>_s`` keys of the ``cpu`` block).
TOOLS = ("sextractor", "scamp", "psfex", "swarp")


def self_cpu() -> float:
    """User + system CPU seconds of this process so far."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def tree_cpu() -> float:
    """CPU seconds of this process plus every child it has waited for (and their reaped children)."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


class StageClock:
    """Wall and own-CPU seconds per named stage, and CPU seconds per Astromatic tool, in one process."""

    def __init__(self) -> None:
        self.wall: dict[str, float] = {}
        self.own: dict[str, float] = {}
        self.tools: dict[str, float] = {}
        self._cpu0 = self_cpu()

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the block as stage ``name`` (repeated stages add up)."""
        t0, c0 = time.perf_counter(), self_cpu()
        try:
            yield
        finally:
            self.wall[name] = self.wall.get(name, 0.0) + time.perf_counter() - t0
            self.own[name] = self.own.get(name, 0.0) + self_cpu() - c0

    def tool(self, name: str | None, tool: str, args: Sequence[str], *, cwd: str | Path) -> ToolResult:
        """Run an Astromatic tool (as stage ``name`` unless None); its CPU counts under ``tool``."""
        with self.stage(name) if name else contextlib.nullcontext():
            result = run_tool(tool, args, cwd=cwd)
        self.tools[tool] = self.tools.get(tool, 0.0) + result.cpu_s
        return result

    def record(self) -> dict[str, Any]:
        """``{"timings": wall per stage, "own_cpu": own CPU per stage + "other", "tool_cpu": per tool}``."""
        own = dict(self.own)
        own["other"] = max(0.0, self_cpu() - self._cpu0 - sum(self.own.values()))
        return {"timings": dict(self.wall), "own_cpu": own, "tool_cpu": dict(self.tools)}


def merge_records(records: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Sum :meth:`StageClock.record` dicts key by key."""
    out: dict[str, dict[str, float]] = {"timings": {}, "own_cpu": {}, "tool_cpu": {}}
    for rec in records:
        for part, acc in out.items():
            for k, v in rec.get(part, {}).items():
                acc[k] = acc.get(k, 0.0) + float(v)
    return out


def cpu_block(total_s: float, merged: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
    """The manifest's ``cpu`` block from the process-tree total and the merged stage records.

    Returns
    -------
    dict
        ``total_s``, ``own_s`` (total minus tools), ``astromatic_s``, ``<tool>_s`` for each of
        :data:`TOOLS`, ``own_share`` (own / total) and ``own_stages`` (own CPU seconds per stage,
        largest first; ``other`` is CPU of our processes outside every named stage, ``unattributed``
        what the per-process clocks did not see: worker start-up and imports, version probes).
    """
    tool_cpu = merged.get("tool_cpu", {})
    astro = sum(tool_cpu.values())
    own = max(0.0, total_s - astro)
    stages = dict(merged.get("own_cpu", {}))
    stages["unattributed"] = max(0.0, own - sum(stages.values()))
    block: dict[str, Any] = {"total_s": round(total_s, 3), "own_s": round(own, 3), "astromatic_s": round(astro, 3)}
    for tool in TOOLS:
        block[f"{tool}_s"] = round(tool_cpu.get(tool, 0.0), 3)
    block["own_share"] = round(own / total_s, 4) if total_s > 0 else None
    block["own_stages"] = {k: round(v, 3) for k, v in sorted(stages.items(), key=lambda kv: -kv[1])}
    return block
