"""The stage clock of the coadd orchestration: each named stage timed and logged as it ends.

The timings (seconds, summed when a stage runs again) are the manifest's ``timings`` block.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["StageTimer"]

log = logging.getLogger(__name__)


class StageTimer:
    """Times stages and logs each one as it ends.

    Parameters
    ----------
    label : str
        Prefix of the log lines (``coadd <tile> <band>``, ``calibrate <tile>``).

    Examples
    --------
    >>> stage = StageTimer("coadd T r")
    >>> with stage("stars"):
    ...     pass
    >>> sorted(stage.timings)
    ['stars']
    """

    def __init__(self, label: str) -> None:
        self.label = label
        self.timings: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        log.info("%s: %s ...", self.label, name)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            dt_s = time.perf_counter() - t0
            self.timings[name] = round(self.timings.get(name, 0.0) + dt_s, 4)
            log.info("%s: %s done in %.2f s", self.label, name, dt_s)
