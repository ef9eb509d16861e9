"""A covering index for the nights page: per-night QA-product counts and runs from the index alone

Revision ID: 0005_ui
Revises: 0004
"""

from __future__ import annotations

from alembic import op

revision = "0005_ui"
down_revision = "0004"
branch_labels = None
depends_on = None

_COLS = ["stage", "kind", "survey", "night", "state", "expnum", "run_id"]


def upgrade() -> None:
    op.create_index("ix_products_stage_kind_night", "products", _COLS)


def downgrade() -> None:
    op.drop_index("ix_products_stage_kind_night", table_name="products")
