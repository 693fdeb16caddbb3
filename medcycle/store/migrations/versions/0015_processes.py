"""jobs: the registry of live processes (serving workers, agents) and their last heartbeat

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-29 17:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import medcycle.store.base

revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('processes',
    sa.Column('id', sa.String(length=256), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('host', sa.String(length=256), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('queue', sa.String(length=128), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('current_job', sa.String(length=256), nullable=True),
    sa.Column('beat_seconds', sa.Float(), nullable=False),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.Column('started_at', medcycle.store.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_seen_at', medcycle.store.base.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_processes'))
    )
    op.create_index('ix_processes_kind_seen', 'processes', ['kind', 'last_seen_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_processes_kind_seen', table_name='processes')
    op.drop_table('processes')
