"""Helpers shared by every test tier (no fixtures here: see conftest.py and fixtures/)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

__all__ = ["IN_CI", "REAL_DATA", "REPO", "need", "need_binary", "real_file"]

#: Under CI=true a test that needs a service or binary fails instead of skipping.
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

REPO = Path(__file__).resolve().parents[1]

#: The small real files (DECam CP cutouts, PSFEx models, ...). Never copied into the repository.
def _real_data() -> Path:
    from cosmodm_ops.config import real_data_root

    return real_data_root()


REAL_DATA = _real_data()


def need(condition: bool, reason: str) -> None:
    """Skip (or, under CI=true, fail) the calling test when ``condition`` is false."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI=true and a required service or binary is missing: {reason}")
    pytest.skip(reason)


def need_binary(*names: str) -> None:
    """Require executables on PATH (``make test`` installs them from Debian's packages)."""
    missing = [n for n in names if shutil.which(n) is None]
    need(not missing, f"missing executable(s) {missing}; run `make os-deps` as root")


def real_file(relpath: str) -> Path:
    """Path of a real data file; skips with a clear reason where the folder is absent."""
    path = REAL_DATA / relpath
    if not path.exists():
        pytest.skip(f"real data file {path} is absent (set COSMODM_REAL_DATA to ../shared/data/real)")
    return path


def wait_until(cond, timeout: float, what: str, log: Path):
    """Poll ``cond()`` every second until it returns something true (returned); on timeout fail with the log's tail."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}; log tail:\n{log.read_text()[-3000:]}")
