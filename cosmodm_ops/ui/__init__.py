"""Read side of the survey pages: parameterized queries over the archive tables and SVG renderers.

No Airflow import here (the FastAPI app in :mod:`cosmodm_ops.airflow.webapp` calls these).
"""

from __future__ import annotations

__all__: list[str] = []
