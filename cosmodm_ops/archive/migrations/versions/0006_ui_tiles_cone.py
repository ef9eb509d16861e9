"""The sky pages' read paths: tile status per band from a covering index, indexable cones on exposures and tiles,
and a tile's QA rows by a partial index (ANALYZE saw qa_results.tile as one NULL key and SQLite scanned the table)

Revision ID: 0006_ui
Revises: 0005_ui
"""

from __future__ import annotations

import sqlalchemy as sa
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
    where = sa.text("tile IS NOT NULL")
    op.create_index("ix_qa_results_tile_set", "qa_results", ["tile", "band"], sqlite_where=where,
                    postgresql_where=where)


def downgrade() -> None:
    op.drop_index("ix_qa_results_tile_set", table_name="qa_results")
    op.drop_index("ix_tiles_dec_ra", table_name="tiles")
    op.drop_index("ix_exposures_dec_ra", table_name="exposures")
    op.drop_index("ix_products_stage_survey_tile", table_name="products")
