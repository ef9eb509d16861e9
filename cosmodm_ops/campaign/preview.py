"""The impact preview of a campaign: what would be redone, what it costs, what it replaces.

Built from the selected items (:mod:`~cosmodm_ops.campaign.selection`) and the archive alone:
estimated core-hours come from the ``cpu`` block of the manifests of earlier runs of the same
stage (the item's own earlier run where known, else the mean of those), bytes from the runs'
``bytes_read``/``bytes_written``; products to be superseded are the items' current products,
and "stale downstream" every current product made from them (the walk of ``archive stale``).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import sqlalchemy as sa

from cosmodm_ops.archive import schema as S
from cosmodm_ops.campaign.selection import Item, downstream_of, in_chunks

__all__ = ["Preview", "build_preview", "estimate_core_hours"]


@dataclass
class Preview:
    """The impact preview (JSON-able; ``to_markdown`` for the approval step and the CLI)."""

    campaign: str
    survey: str
    stage: str
    target_version: str
    site: str
    overrides: dict[str, Any]
    items: int
    to_run: int
    skipped: int
    by_stage: dict[str, int] = field(default_factory=dict)
    by_night: dict[str, int] = field(default_factory=dict)
    by_band: dict[str, int] = field(default_factory=dict)
    by_tile: dict[str, int] = field(default_factory=dict)
    chunks: int = 0
    core_hours_estimated: float = 0.0
    core_hours_basis: str = ""
    bytes_read: int = 0
    bytes_written: int = 0
    superseded: int = 0
    stale_downstream: int = 0
    stale_by_stage: dict[str, int] = field(default_factory=dict)
    skipped_keys: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def to_markdown(self) -> str:
        """The preview as markdown (the HITL approval body, ``cosmodm campaign plan``)."""
        def table(title: str, counts: dict[str, int]) -> list[str]:
            if not counts:
                return []
            rows = [f"| {k} | {v} |" for k, v in sorted(counts.items())]
            return [f"| {title} | items |", "|---|---|", *rows, ""]

        lines = [f"### Campaign `{self.campaign}`: {self.stage} -> `{self.target_version}` on `{self.site}`", "",
                 f"* survey **{self.survey}**; overrides `{json.dumps(self.overrides, sort_keys=True)}`",
                 (f"* **{self.to_run}** item(s) to run in {self.chunks} chunk(s); **{self.skipped}** already "
                  f"up to date (skipped); {self.items} selected"),
                 f"* estimated **{self.core_hours_estimated:.3g} core-hours** ({self.core_hours_basis})",
                 f"* bytes to read {_size(self.bytes_read)}, to write {_size(self.bytes_written)}",
                 f"* **{self.superseded}** product(s) will be superseded; **{self.stale_downstream}** product(s) "
                 "downstream will become stale" + (f" ({_counts(self.stale_by_stage)})" if self.stale_by_stage else ""),
                 ""]
        lines += table("stage", self.by_stage) + table("night", self.by_night)
        lines += table("band", self.by_band) + table("tile", self.by_tile)
        if self.skipped_keys:
            shown = ", ".join(f"`{k}`" for k in self.skipped_keys[:20])
            lines.append(f"Skipped (up to date): {shown}{' ...' if len(self.skipped_keys) > 20 else ''}")
        return "\n".join(lines).rstrip() + "\n"


def _size(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


def _counts(d: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(d.items()))


def estimate_core_hours(items: list[Item]) -> tuple[dict[str, float], str]:
    """Core-hours per item key from earlier runs' manifests (cpu.total_s); the stage mean where unknown."""
    known: dict[str, list[float]] = {}
    for it in items:
        cpu = (it.spec.get("prev") or {}).get("cpu_s")
        if cpu:
            known.setdefault(it.stage, []).append(float(cpu))
    out: dict[str, float] = {}
    missing = 0
    for it in items:
        cpu = (it.spec.get("prev") or {}).get("cpu_s")
        if not cpu and known.get(it.stage):
            cpu = sum(known[it.stage]) / len(known[it.stage])
        if not cpu:
            missing += 1
        out[it.key] = float(cpu or 0.0) / 3600.0
    n_known = sum(len(v) for v in known.values())
    basis = f"cpu block of {n_known} earlier manifest(s) of the same stage"
    if missing:
        basis += f"; {missing} item(s) with no earlier run counted as 0"
    return out, basis


def build_preview(req: Any, items: list[Item], archive: Any) -> Preview:
    """The preview of a request's items (``archive`` for the downstream walk)."""
    todo = [it for it in items if not it.up_to_date]
    skipped = [it for it in items if it.up_to_date]
    est, basis = estimate_core_hours(todo)
    replaced = sorted({pid for it in todo for pid in it.replaces})
    down = downstream_of(archive, replaced) if replaced else {}
    stale_ids = sorted(set(down) - set(replaced))
    p = S.products
    rows = in_chunks(archive, lambda ids: sa.select(p.c.stage, p.c.kind).where(p.c.id.in_(ids)), stale_ids)
    stale_by_stage = Counter(f"{r['stage']}/{r['kind']}" for r in rows)
    prevs = [it.spec.get("prev") or {} for it in todo]
    return Preview(
        campaign=req.name, survey=req.survey, stage=req.stage, target_version=req.target_version, site=req.site,
        overrides=req.overrides, items=len(items), to_run=len(todo), skipped=len(skipped),
        by_stage=dict(Counter(it.stage for it in todo)),
        by_night=dict(Counter(it.night for it in todo if it.night)),
        by_band=dict(Counter(it.band for it in todo if it.band)),
        by_tile=dict(Counter(it.tile for it in todo if it.tile)),
        chunks=_n_chunks(todo, req.chunk_size),
        core_hours_estimated=round(sum(est.values()), 6), core_hours_basis=basis,
        bytes_read=sum(int(p.get("bytes_read") or 0) for p in prevs),
        bytes_written=sum(int(p.get("bytes_written") or 0) for p in prevs),
        superseded=len(replaced), stale_downstream=len(stale_ids), stale_by_stage=dict(stale_by_stage),
        skipped_keys=[it.key for it in skipped],
    )


def _n_chunks(items: list[Item], size: int) -> int:
    by_stage = Counter(it.stage for it in items)
    return sum(-(-n // size) for n in by_stage.values())
