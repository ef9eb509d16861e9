"""The nights page's runs per night: a ``night_runs`` table kept by registration, filled here from the products;
a campaign's items by (campaign, id) for its keyset pages

A night's runs were read by joining each single-epoch QA product to its job's ``runs`` row (one per exposure:
3000 rows for a 30-night page, a hash join over every run on PostgreSQL); this table holds the few distinct
(night, DAG run) pairs, written in the registration's own transaction.

Revision ID: 0007_night_runs
Revises: 0006_ui
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_night_runs"
down_revision = "0006_ui"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "night_runs",
        sa.Column("survey", sa.String(64), nullable=False),
        sa.Column("night", sa.String(10), nullable=False),
        sa.Column("dag_id", sa.String(250), nullable=False),
        sa.Column("run_id", sa.String(250), nullable=False),
        sa.PrimaryKeyConstraint("survey", "night", "dag_id", "run_id", name=op.f("pk_night_runs")),
    )
    op.execute(
        "INSERT INTO night_runs (survey, night, dag_id, run_id) "
        "SELECT DISTINCT p.survey, p.night, r.dag_id, r.run_id FROM products p JOIN runs r ON r.id = p.run_id "
        "WHERE p.stage = 'single_epoch' AND p.kind = 'qa' AND p.survey IS NOT NULL AND p.night IS NOT NULL "
        "AND r.dag_id IS NOT NULL AND r.run_id IS NOT NULL")
    op.create_index("ix_campaign_item_campaign_id_id", "campaign_item", ["campaign_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_campaign_item_campaign_id_id", table_name="campaign_item")
    op.drop_table("night_runs")
