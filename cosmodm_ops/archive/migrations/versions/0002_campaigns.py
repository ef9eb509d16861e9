"""campaigns: the campaign and campaign_item tables (cosmodm_ops.campaign.schema)

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

_Id = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table(
        'campaign',
        sa.Column('id', _Id, autoincrement=True, nullable=False),
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('description', sa.Text(), nullable=True),
        sa.Column('survey', sa.String(length=64), nullable=False),
        sa.Column('stage', sa.String(length=40), nullable=False),
        sa.Column('site', sa.String(length=100), nullable=False),
        sa.Column('target_version', sa.String(length=64), nullable=False),
        sa.Column('config_hash', sa.String(length=128), nullable=True),
        sa.Column('params', sa.Text(), nullable=False),
        sa.Column('preview', sa.Text(), nullable=True),
        sa.Column('state', sa.String(length=20), nullable=False),
        sa.Column('queued_behind', sa.BigInteger(), nullable=True),
        sa.Column('source', sa.String(length=250), nullable=True),
        sa.Column('priority', sa.Integer(), nullable=False),
        sa.Column('chunk_size', sa.Integer(), nullable=False),
        sa.Column('max_retries', sa.Integer(), nullable=False),
        sa.Column('core_hours_estimated', sa.Float(), nullable=True),
        sa.Column('created_by', sa.String(length=200), nullable=True),
        sa.Column('created_at', sa.String(length=40), nullable=False),
        sa.Column('updated_at', sa.String(length=40), nullable=False),
        sa.Column('note', sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_campaign')),
        sa.UniqueConstraint('source', name=op.f('uq_campaign_source')),
    )
    op.create_index(op.f('ix_campaign_state'), 'campaign', ['state'], unique=False)
    op.create_table(
        'campaign_item',
        sa.Column('id', _Id, autoincrement=True, nullable=False),
        sa.Column('campaign_id', sa.BigInteger(), nullable=False),
        sa.Column('item_key', sa.String(length=250), nullable=False),
        sa.Column('stage', sa.String(length=32), nullable=False),
        sa.Column('night', sa.String(length=10), nullable=True),
        sa.Column('expnum', sa.Integer(), nullable=True),
        sa.Column('band', sa.String(length=64), nullable=True),
        sa.Column('tile', sa.String(length=64), nullable=True),
        sa.Column('state', sa.String(length=20), nullable=False),
        sa.Column('chunk', sa.Integer(), nullable=True),
        sa.Column('array_index', sa.Integer(), nullable=True),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('job_id', sa.String(length=100), nullable=True),
        sa.Column('exit_code', sa.Integer(), nullable=True),
        sa.Column('elapsed_s', sa.Float(), nullable=True),
        sa.Column('max_rss_mb', sa.Float(), nullable=True),
        sa.Column('out', sa.Text(), nullable=True),
        sa.Column('spec', sa.Text(), nullable=False),
        sa.Column('estimate_core_h', sa.Float(), nullable=True),
        sa.Column('core_h_used', sa.Float(), nullable=True),
        sa.Column('diagnostics', sa.Text(), nullable=True),
        sa.Column('run_id', sa.BigInteger(), nullable=True),
        sa.Column('product_ids', sa.Text(), nullable=True),
        sa.Column('superseded', sa.Integer(), nullable=False),
        sa.Column('qa_verdict', sa.String(length=20), nullable=True),
        sa.Column('decision', sa.String(length=20), nullable=True),
        sa.Column('decided_by', sa.String(length=200), nullable=True),
        sa.Column('decided_at', sa.String(length=40), nullable=True),
        sa.Column('updated_at', sa.String(length=40), nullable=False),
        sa.ForeignKeyConstraint(['campaign_id'], ['campaign.id'], name=op.f('fk_campaign_item_campaign_id_campaign')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_campaign_item')),
        sa.UniqueConstraint('campaign_id', 'item_key', name=op.f('uq_campaign_item_campaign_id_item_key')),
    )
    op.create_index(op.f('ix_campaign_item_item_key_state'), 'campaign_item', ['item_key', 'state'], unique=False)
    op.create_index(op.f('ix_campaign_item_campaign_id_state'), 'campaign_item', ['campaign_id', 'state'],
                    unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_campaign_item_campaign_id_state'), table_name='campaign_item')
    op.drop_index(op.f('ix_campaign_item_item_key_state'), table_name='campaign_item')
    op.drop_table('campaign_item')
    op.drop_index(op.f('ix_campaign_state'), table_name='campaign')
    op.drop_table('campaign')
