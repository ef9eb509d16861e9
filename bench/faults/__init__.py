"""``make faults``: inject failures into the real processes mid-run and measure what the platform did.

A registry of fault functions. Each row is one function registered with :func:`fault`; it gets a
:class:`FaultEnv` (services started lazily and shared by the rows of one tier, stopped at the end) and
returns a :class:`FaultResult`. The runner prints a table and one JSON line
``{"faults": [{"name", "survived", "lost", "duplicated", "recovery_s", ...}]}`` and exits non-zero when a
row did not survive or lost or duplicated anything (every row must end 0 lost, 0 duplicated).

Adding rows (e.g. from another module)::

    from bench.faults import FaultEnv, FaultResult, fault

    @fault("restart_archive_postgres", tier="postgres")
    def restart_archive_postgres(env: FaultEnv) -> FaultResult:
        ...  # start the workload, inject, wait, count
        return FaultResult(name="restart_archive_postgres", injected="...", action="...", survived=True,
                           lost=0, duplicated=0, recovery_s=3.2)

and list the module in :data:`MODULES`. ``env.service(tier, start)`` starts a tier's services once
(``start(env) -> obj`` with an optional ``obj.close()`` or ``obj.stop_all()``, called at the end); ``env.workdir`` is a private
temp folder. Run some rows only: ``python -m bench.faults NAME ...``; list them: ``--list``.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["FAULTS", "MODULES", "Fault", "FaultEnv", "FaultResult", "fault", "main", "run_faults"]

#: Modules whose import registers rows (in table order).
MODULES = ["bench.faults.celery_faults", "bench.faults.archive_faults", "bench.faults.batch_faults",
           "bench.faults.transfer_faults"]


@dataclass
class FaultResult:
    """One row of the table.

    Attributes
    ----------
    name : str
    injected : str
        When the fault was injected (the workload's state at that moment).
    action : str
        What the platform did (retried, resumed, adopted...).
    survived : bool
        The workload ended as without the fault.
    lost, duplicated : int
        Products (or jobs) missing / present more than once at the end, against the expected set.
    recovery_s : float or None
        Seconds from the injection until the platform finished work again (first task success after it).
    """

    name: str
    injected: str
    action: str
    survived: bool
    lost: int
    duplicated: int
    recovery_s: float | None
    note: str = ""
    wall_s: float = 0.0


@dataclass(frozen=True)
class Fault:
    """A registered row: its name, the tier of services it needs, and the function."""

    name: str
    tier: str
    fn: Callable[[FaultEnv], FaultResult]


FAULTS: dict[str, Fault] = {}


def fault(name: str, *, tier: str) -> Callable[[Callable[[FaultEnv], FaultResult]], Callable[[FaultEnv], FaultResult]]:
    """Register a fault function under ``name`` (unique) for services of ``tier``."""

    def register(fn: Callable[[FaultEnv], FaultResult]) -> Callable[[FaultEnv], FaultResult]:
        if name in FAULTS:
            msg = f"fault {name!r} is registered twice"
            raise ValueError(msg)
        FAULTS[name] = Fault(name, tier, fn)
        return fn

    return register


@dataclass
class FaultEnv:
    """What a fault function gets: a private folder and lazily started, shared services."""

    workdir: Path
    services: dict[str, Any] = field(default_factory=dict)
    #: Peak resident memory (MiB) per process of each tier that reports it (``peak_rss_kib``), kept at close.
    peak_rss_mb: dict[str, dict[str, float]] = field(default_factory=dict)

    def service(self, tier: str, start: Callable[[FaultEnv], Any]) -> Any:
        """The tier's services, started by ``start(self)`` on first use."""
        if tier not in self.services:
            self.services[tier] = start(self)
        return self.services[tier]

    def close(self) -> None:
        for tier, svc in self.services.items():
            if isinstance(getattr(svc, "peak_rss_kib", None), dict):
                self.peak_rss_mb[tier] = {k: round(v / 1024, 1) for k, v in svc.peak_rss_kib.items()}
        for svc in reversed(list(self.services.values())):
            for method in ("close", "stop_all"):
                if hasattr(svc, method):
                    try:
                        getattr(svc, method)()
                    except Exception:  # noqa: BLE001 - stop the others too
                        traceback.print_exc()
                    break
        self.services.clear()


def _load() -> None:
    import importlib

    for mod in MODULES:
        importlib.import_module(mod)


def run_faults(names: list[str] | None = None, env: FaultEnv | None = None) -> list[FaultResult]:
    """Run the named rows (default: all, grouped by tier), each to its end; a crash is a failed row."""
    _load()
    unknown = sorted(set(names or []) - set(FAULTS))
    if unknown:
        msg = f"unknown fault(s) {unknown}: known are {sorted(FAULTS)} (python -m bench.faults --list)"
        raise SystemExit(msg)
    chosen = [FAULTS[n] for n in names] if names else sorted(FAULTS.values(), key=lambda f: f.tier)
    env = env or FaultEnv(Path(tempfile.mkdtemp(prefix="cosmodm-faults-")))
    results = []
    try:
        for f in chosen:
            t0 = time.monotonic()
            try:
                res = f.fn(env)
            except Exception as err:  # noqa: BLE001 - a crashed row is a failed row, the others still run
                traceback.print_exc()
                res = FaultResult(f.name, "?", f"the fault run itself failed: {err}"[:300], False, -1, -1, None)
            res.wall_s = round(time.monotonic() - t0, 1)
            print(f"  {res.name}: survived={res.survived} lost={res.lost} duplicated={res.duplicated} "
                  f"recovery_s={res.recovery_s}", file=sys.stderr, flush=True)
            results.append(res)
    finally:
        env.close()
    return results


def table(results: list[FaultResult]) -> str:
    """The results as a Markdown table (the README shows it)."""
    rows = ["| fault | injected | what the platform did | recovery (s) | lost | duplicated | survived |",
            "|---|---|---|---|---|---|---|"]
    for r in results:
        rec = "-" if r.recovery_s is None else f"{r.recovery_s:.1f}"
        rows.append(f"| {r.name} | {r.injected} | {r.action} | {rec} | {r.lost} | {r.duplicated} | "
                    f"{'yes' if r.survived else 'NO'} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--list" in argv:
        _load()
        for f in FAULTS.values():
            print(f"{f.name}\t{f.tier}")
        return 0
    env = FaultEnv(Path(tempfile.mkdtemp(prefix="cosmodm-faults-")))
    results = run_faults(argv or None, env)
    print(table(results))
    print(json.dumps({"faults": [asdict(r) for r in results], "peak_rss_mb": env.peak_rss_mb}))
    ok = all(r.survived and r.lost == 0 and r.duplicated == 0 for r in results)
    return 0 if ok else 1
