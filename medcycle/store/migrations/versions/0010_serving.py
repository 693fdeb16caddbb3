"""serving: results keyed by input digests + model version + parameters (idempotent writes)

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29 14:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import medcycle.store.base

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('serving_results',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('model', sa.String(length=128), nullable=False),
    sa.Column('model_version_id', sa.String(length=32), nullable=False),
    sa.Column('model_ref', sa.String(length=160), nullable=False),
    sa.Column('weights_digest', sa.String(length=64), nullable=False),
    sa.Column('task', sa.String(length=32), nullable=False),
    sa.Column('inputs_digest', sa.String(length=64), nullable=False),
    sa.Column('params', sa.JSON(), nullable=False),
    sa.Column('images', sa.Integer(), nullable=False),
    sa.Column('cases', sa.JSON(), nullable=False),
    sa.Column('outputs', sa.JSON(), nullable=False),
    sa.Column('compute_ms', sa.Float(), nullable=True),
    sa.Column('job_id', sa.String(length=32), nullable=True),
    sa.Column('created_at', medcycle.store.base.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_serving_results'))
    )
    op.create_index(op.f('ix_serving_results_inputs_digest'), 'serving_results', ['inputs_digest'], unique=False)
    op.create_index('ix_serving_results_version_created', 'serving_results', ['model_version_id', 'created_at'],
                    unique=False)


def downgrade() -> None:
    op.drop_index('ix_serving_results_version_created', table_name='serving_results')
    op.drop_index(op.f('ix_serving_results_inputs_digest'), table_name='serving_results')
    op.drop_table('serving_results')
