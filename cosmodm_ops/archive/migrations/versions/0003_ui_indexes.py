"""Indexes for the survey pages (cosmodm_ops.ui.queries): nights by survey, coadd status, runs, tile QA.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_INDEXES = (
    ("ix_exposures_survey_night", "exposures", ["survey", "night"]),
    ("ix_products_stage_tile_band", "products", ["stage", "tile", "band", "kind"]),
    ("ix_products_state", "products", ["state"]),
    ("ix_products_run_id", "products", ["run_id"]),
    ("ix_runs_dag_id_run_id", "runs", ["dag_id", "run_id"]),
    ("ix_qa_results_tile_band", "qa_results", ["tile", "band"]),
    ("ix_qa_results_product_id", "qa_results", ["product_id"]),
    ("ix_quarantine_tile_band", "quarantine", ["tile", "band"]),
)


def upgrade() -> None:
    for name, table, cols in _INDEXES:
        op.create_index(name, table, cols)


def downgrade() -> None:
    for name, table, _ in reversed(_INDEXES):
        op.drop_index(name, table_name=table)
