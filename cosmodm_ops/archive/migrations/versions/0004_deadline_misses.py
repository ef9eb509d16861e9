"""deadline misses: one row per missed Deadline Alert of a DAG run

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04

After 0002 (campaigns) and 0003 (survey-page indexes): one chain, one head.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'deadline_misses',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
        sa.Column('dag_id', sa.String(length=250), nullable=False),
        sa.Column('run_id', sa.String(length=250), nullable=False),
        sa.Column('survey', sa.String(length=64), nullable=True),
        sa.Column('night', sa.String(length=10), nullable=True),
        sa.Column('site', sa.String(length=100), nullable=True),
        sa.Column('due_at', sa.String(length=40), nullable=False),
        sa.Column('recorded_at', sa.String(length=40), nullable=False),
        sa.Column('run_state', sa.String(length=20), nullable=True),
        sa.Column('deadline_id', sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_deadline_misses')),
        sa.UniqueConstraint('dag_id', 'run_id', 'due_at', name=op.f('uq_deadline_misses_dag_id_run_id_due_at')),
    )
    with op.batch_alter_table('deadline_misses', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_deadline_misses_night'), ['night'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('deadline_misses', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_deadline_misses_night'))
    op.drop_table('deadline_misses')
