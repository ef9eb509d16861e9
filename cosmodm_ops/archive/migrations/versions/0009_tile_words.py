"""Each tile's current coadd products as one string of words, kept by registration: ``tile_words``

The tiles page aggregated every current coadd product of a survey on each request (5 ms of SQL for 1000 tiles on
SQLite and PostgreSQL); registration now keeps one row per tile (``archive/tile_words.py``), filled here from
the products.

Revision ID: 0009_tile_words
Revises: 0008_campaign_progress
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_tile_words"
down_revision = "0008_campaign_progress"
branch_labels = None
depends_on = None


def upgrade() -> None:
    tw = op.create_table(
        "tile_words",
        sa.Column("survey", sa.String(64), nullable=False),
        sa.Column("tile", sa.String(64), nullable=False),
        sa.Column("words", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("survey", "tile", name=op.f("pk_tile_words")),
    )
    p = sa.table("products", *(sa.column(c, sa.String) for c in ("survey", "tile", "stage", "state", "kind", "band")))
    letters = {"coadd": "C", "coadd_catalog": "K", "coadd_homog": "H"}  # archive/tile_words.WORD_KINDS
    word = sa.case(*((p.c.kind == k, v) for k, v in letters.items())) + p.c.band
    op.execute(sa.insert(tw).from_select(["survey", "tile", "words"], sa.select(
        p.c.survey, p.c.tile, sa.func.aggregate_strings(word, " ")).where(
        p.c.stage == "coadd", p.c.state == "current", p.c.kind.in_(tuple(letters)), p.c.tile.isnot(None),
        p.c.survey.isnot(None)).group_by(p.c.survey, p.c.tile)))


def downgrade() -> None:
    op.drop_table("tile_words")
