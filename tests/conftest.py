"""Test configuration: tiers by marker, service fixtures from tests/fixtures/.

Markers: unit (no services), postgres, ssh, slurm, astromatic, airflow, celery, browser, e2e.
A test file in tests/unit/ is marked ``unit`` automatically.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = [
    "tests.fixtures.postgres",
    "tests.fixtures.services",
    "tests.fixtures.airflow",
    "tests.fixtures.ui",
    "tests.fixtures.celery",
    "tests.fixtures.browser",
]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(item.fspath))
        if "unit" in path.parts and not any(m.name != "unit" and m.name in _SERVICE_MARKS for m in item.iter_markers()):
            item.add_marker(pytest.mark.unit)


_SERVICE_MARKS = {"postgres", "ssh", "slurm", "astromatic", "airflow", "celery", "e2e", "browser"}
