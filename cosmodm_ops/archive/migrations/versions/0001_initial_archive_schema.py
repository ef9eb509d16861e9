"""initial archive schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('objects',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('product_id', sa.BigInteger(), nullable=False),
    sa.Column('exposure_id', sa.BigInteger(), nullable=True),
    sa.Column('expnum', sa.Integer(), nullable=True),
    sa.Column('ccd', sa.Integer(), nullable=True),
    sa.Column('tile', sa.String(length=64), nullable=True),
    sa.Column('band', sa.String(length=64), nullable=True),
    sa.Column('number', sa.Integer(), nullable=True),
    sa.Column('ra', sa.Float(), nullable=False),
    sa.Column('dec', sa.Float(), nullable=False),
    sa.Column('hpx', sa.BigInteger(), nullable=False),
    sa.Column('mag_auto', sa.Float(), nullable=True),
    sa.Column('magerr_auto', sa.Float(), nullable=True),
    sa.Column('mag_psf', sa.Float(), nullable=True),
    sa.Column('magerr_psf', sa.Float(), nullable=True),
    sa.Column('spread_model', sa.Float(), nullable=True),
    sa.Column('class_star', sa.Float(), nullable=True),
    sa.Column('flags', sa.Integer(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_objects'))
    )
    with op.batch_alter_table('objects', schema=None) as batch_op:
        batch_op.create_index('ix_objects_expnum_ccd', ['expnum', 'ccd'], unique=False, postgresql_where=sa.text('expnum IS NOT NULL'), sqlite_where=sa.text('expnum IS NOT NULL'))
        batch_op.create_index(batch_op.f('ix_objects_hpx'), ['hpx'], unique=False)
        batch_op.create_index(batch_op.f('ix_objects_product_id'), ['product_id'], unique=False)
        batch_op.create_index('ix_objects_tile_band', ['tile', 'band'], unique=False, postgresql_where=sa.text('tile IS NOT NULL'), sqlite_where=sa.text('tile IS NOT NULL'))

    op.create_table('runs',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('run_key', sa.String(length=64), nullable=False),
    sa.Column('dag_id', sa.String(length=250), nullable=True),
    sa.Column('run_id', sa.String(length=250), nullable=True),
    sa.Column('task_id', sa.String(length=250), nullable=True),
    sa.Column('try_number', sa.Integer(), nullable=True),
    sa.Column('batch_job_id', sa.String(length=100), nullable=True),
    sa.Column('job_name', sa.String(length=250), nullable=True),
    sa.Column('site', sa.String(length=100), nullable=True),
    sa.Column('host', sa.String(length=250), nullable=True),
    sa.Column('start', sa.String(length=40), nullable=True),
    sa.Column('end', sa.String(length=40), nullable=True),
    sa.Column('state', sa.String(length=20), nullable=True),
    sa.Column('exit_code', sa.Integer(), nullable=True),
    sa.Column('versions', sa.Text(), nullable=True),
    sa.Column('config_hash', sa.String(length=128), nullable=True),
    sa.Column('bytes_read', sa.BigInteger(), nullable=True),
    sa.Column('bytes_written', sa.BigInteger(), nullable=True),
    sa.Column('manifest_path', sa.Text(), nullable=True),
    sa.Column('created_at', sa.String(length=40), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_runs')),
    sa.UniqueConstraint('run_key', name=op.f('uq_runs_run_key'))
    )
    op.create_table('tiles',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('survey', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('ra', sa.Float(), nullable=True),
    sa.Column('dec', sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tiles')),
    sa.UniqueConstraint('survey', 'name', name=op.f('uq_tiles_survey_name'))
    )
    op.create_table('products',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('key', sa.String(length=400), nullable=False),
    sa.Column('revision', sa.Integer(), nullable=False),
    sa.Column('survey', sa.String(length=64), nullable=False),
    sa.Column('camera', sa.String(length=64), nullable=False),
    sa.Column('stage', sa.String(length=32), nullable=False),
    sa.Column('version', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('night', sa.String(length=10), nullable=True),
    sa.Column('expnum', sa.Integer(), nullable=True),
    sa.Column('ccd', sa.Integer(), nullable=True),
    sa.Column('band', sa.String(length=64), nullable=True),
    sa.Column('tile', sa.String(length=64), nullable=True),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('superseded_by', sa.BigInteger(), nullable=True),
    sa.Column('run_id', sa.BigInteger(), nullable=True),
    sa.Column('created_at', sa.String(length=40), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_products_run_id_runs')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_products')),
    sa.UniqueConstraint('key', 'revision', name=op.f('uq_products_key_revision')),
    sa.UniqueConstraint('path', name=op.f('uq_products_path'))
    )
    with op.batch_alter_table('products', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_products_key_state'), ['key', 'state'], unique=False)
        batch_op.create_index(batch_op.f('ix_products_night_expnum_ccd'), ['night', 'expnum', 'ccd'], unique=False)
        batch_op.create_index(batch_op.f('ix_products_sha256'), ['sha256'], unique=False)
        batch_op.create_index(batch_op.f('ix_products_tile_band'), ['tile', 'band'], unique=False)

    op.create_table('exposures',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('survey', sa.String(length=64), nullable=False),
    sa.Column('camera', sa.String(length=64), nullable=False),
    sa.Column('night', sa.String(length=10), nullable=False),
    sa.Column('expnum', sa.Integer(), nullable=False),
    sa.Column('band', sa.String(length=64), nullable=True),
    sa.Column('exptime', sa.Float(), nullable=True),
    sa.Column('ra', sa.Float(), nullable=True),
    sa.Column('dec', sa.Float(), nullable=True),
    sa.Column('raw_product_id', sa.BigInteger(), nullable=True),
    sa.Column('created_at', sa.String(length=40), nullable=False),
    sa.ForeignKeyConstraint(['raw_product_id'], ['products.id'], name=op.f('fk_exposures_raw_product_id_products')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_exposures')),
    sa.UniqueConstraint('survey', 'camera', 'expnum', name=op.f('uq_exposures_survey_camera_expnum'))
    )
    with op.batch_alter_table('exposures', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_exposures_night'), ['night'], unique=False)

    op.create_table('lineage',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('product_id', sa.BigInteger(), nullable=False),
    sa.Column('input_product_id', sa.BigInteger(), nullable=True),
    sa.Column('input_sha256', sa.String(length=64), nullable=False),
    sa.Column('input_path', sa.Text(), nullable=True),
    sa.Column('role', sa.String(length=64), nullable=False),
    sa.Column('run_id', sa.BigInteger(), nullable=True),
    sa.ForeignKeyConstraint(['input_product_id'], ['products.id'], name=op.f('fk_lineage_input_product_id_products')),
    sa.ForeignKeyConstraint(['product_id'], ['products.id'], name=op.f('fk_lineage_product_id_products')),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_lineage_run_id_runs')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_lineage')),
    sa.UniqueConstraint('product_id', 'input_sha256', 'role', name=op.f('uq_lineage_product_id_input_sha256_role'))
    )
    with op.batch_alter_table('lineage', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_lineage_input_product_id'), ['input_product_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_lineage_input_sha256'), ['input_sha256'], unique=False)

    op.create_table('qa_results',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('run_id', sa.BigInteger(), nullable=True),
    sa.Column('product_id', sa.BigInteger(), nullable=True),
    sa.Column('survey', sa.String(length=64), nullable=True),
    sa.Column('expnum', sa.Integer(), nullable=True),
    sa.Column('ccd', sa.Integer(), nullable=True),
    sa.Column('tile', sa.String(length=64), nullable=True),
    sa.Column('band', sa.String(length=64), nullable=True),
    sa.Column('scope', sa.String(length=100), nullable=False),
    sa.Column('check_name', sa.String(length=100), nullable=False),
    sa.Column('value', sa.Float(), nullable=True),
    sa.Column('threshold', sa.Float(), nullable=True),
    sa.Column('verdict', sa.String(length=20), nullable=False),
    sa.Column('created_at', sa.String(length=40), nullable=False),
    sa.ForeignKeyConstraint(['product_id'], ['products.id'], name=op.f('fk_qa_results_product_id_products')),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name=op.f('fk_qa_results_run_id_runs')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_qa_results')),
    sa.UniqueConstraint('run_id', 'scope', 'check_name', name=op.f('uq_qa_results_run_id_scope_check_name'))
    )
    with op.batch_alter_table('qa_results', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_qa_results_expnum_ccd'), ['expnum', 'ccd'], unique=False)

    op.create_table('quarantine',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('product_id', sa.BigInteger(), nullable=True),
    sa.Column('survey', sa.String(length=64), nullable=True),
    sa.Column('night', sa.String(length=10), nullable=True),
    sa.Column('expnum', sa.Integer(), nullable=True),
    sa.Column('ccd', sa.Integer(), nullable=True),
    sa.Column('tile', sa.String(length=64), nullable=True),
    sa.Column('band', sa.String(length=64), nullable=True),
    sa.Column('version', sa.String(length=64), nullable=True),
    sa.Column('reasons', sa.Text(), nullable=False),
    sa.Column('released', sa.Integer(), nullable=False),
    sa.Column('created_at', sa.String(length=40), nullable=False),
    sa.ForeignKeyConstraint(['product_id'], ['products.id'], name=op.f('fk_quarantine_product_id_products')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_quarantine'))
    )
    with op.batch_alter_table('quarantine', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_quarantine_expnum_ccd'), ['expnum', 'ccd'], unique=False)
        batch_op.create_index(batch_op.f('ix_quarantine_product_id'), ['product_id'], unique=False)

    op.create_table('ccd_images',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('exposure_id', sa.BigInteger(), nullable=False),
    sa.Column('ccd', sa.Integer(), nullable=False),
    sa.Column('version', sa.String(length=64), nullable=False),
    sa.Column('product_id', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['exposure_id'], ['exposures.id'], name=op.f('fk_ccd_images_exposure_id_exposures')),
    sa.ForeignKeyConstraint(['product_id'], ['products.id'], name=op.f('fk_ccd_images_product_id_products')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ccd_images')),
    sa.UniqueConstraint('product_id', name=op.f('uq_ccd_images_product_id'))
    )
    with op.batch_alter_table('ccd_images', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ccd_images_exposure_id_ccd_version'), ['exposure_id', 'ccd', 'version'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('ccd_images', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_ccd_images_exposure_id_ccd_version'))

    op.drop_table('ccd_images')
    with op.batch_alter_table('quarantine', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_quarantine_product_id'))
        batch_op.drop_index(batch_op.f('ix_quarantine_expnum_ccd'))

    op.drop_table('quarantine')
    with op.batch_alter_table('qa_results', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_qa_results_expnum_ccd'))

    op.drop_table('qa_results')
    with op.batch_alter_table('lineage', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_lineage_input_sha256'))
        batch_op.drop_index(batch_op.f('ix_lineage_input_product_id'))

    op.drop_table('lineage')
    with op.batch_alter_table('exposures', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_exposures_night'))

    op.drop_table('exposures')
    with op.batch_alter_table('products', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_products_tile_band'))
        batch_op.drop_index(batch_op.f('ix_products_sha256'))
        batch_op.drop_index(batch_op.f('ix_products_night_expnum_ccd'))
        batch_op.drop_index(batch_op.f('ix_products_key_state'))

    op.drop_table('products')
    op.drop_table('tiles')
    op.drop_table('runs')
    with op.batch_alter_table('objects', schema=None) as batch_op:
        batch_op.drop_index('ix_objects_tile_band', postgresql_where=sa.text('tile IS NOT NULL'), sqlite_where=sa.text('tile IS NOT NULL'))
        batch_op.drop_index(batch_op.f('ix_objects_product_id'))
        batch_op.drop_index(batch_op.f('ix_objects_hpx'))
        batch_op.drop_index('ix_objects_expnum_ccd', postgresql_where=sa.text('expnum IS NOT NULL'), sqlite_where=sa.text('expnum IS NOT NULL'))

    op.drop_table('objects')
