"""The sky pages' read paths: tile status per band from a covering index, and indexable cones on exposures and tiles

Revision ID: 0006_ui
Revises: 0005_ui
"""

from __future__ import annotations

from alembic import op

revision = "0006_ui"
down_revision = "0005_ui"
branch_labels = None
depends_on = None

_TILES = ["stage", "survey", "state", "tile", "band", "kind"]


def upgrade() -> None:
    op.create_index("ix_products_stage_survey_tile", "products", _TILES)
    op.create_index("ix_exposures_dec_ra", "exposures", ["dec", "ra"])
    op.create_index("ix_tiles_dec_ra", "tiles", ["dec", "ra"])


def downgrade() -> None:
    op.drop_index("ix_tiles_dec_ra", table_name="tiles")
    op.drop_index("ix_exposures_dec_ra", table_name="exposures")
    op.drop_index("ix_products_stage_survey_tile", table_name="products")
