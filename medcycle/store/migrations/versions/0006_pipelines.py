"""pipelines: runs, step states, the step cache

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import medcycle.store.base

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

UTC = medcycle.store.base.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        'pipeline_runs',
        sa.Column('id', sa.String(length=32), nullable=False),
        sa.Column('pipeline', sa.String(length=128), nullable=False),
        sa.Column('project', sa.String(length=128), nullable=True),
        sa.Column('spec_digest', sa.String(length=64), nullable=False),
        sa.Column('spec', sa.JSON(), nullable=False),
        sa.Column('source', sa.String(length=1024), nullable=True),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('executor', sa.String(length=16), nullable=False),
        sa.Column('queue', sa.String(length=128), nullable=True),
        sa.Column('forced', sa.JSON(), nullable=False),
        sa.Column('created_by', sa.String(length=64), nullable=False),
        sa.Column('started_at', UTC, nullable=False),
        sa.Column('ended_at', UTC, nullable=True),
        sa.Column('error', sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint('id', name='pk_pipeline_runs'),
    )
    op.create_index('ix_pipeline_runs_pipeline_started', 'pipeline_runs', ['pipeline', 'started_at'])
    op.create_index('ix_pipeline_runs_started', 'pipeline_runs', ['started_at'])
    op.create_table(
        'pipeline_steps',
        sa.Column('run_id', sa.String(length=32), nullable=False),
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('position', sa.Integer(), nullable=False),
        sa.Column('needs', sa.JSON(), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('cache_key', sa.String(length=64), nullable=True),
        sa.Column('cache_hit', sa.Boolean(), nullable=False),
        sa.Column('forced', sa.Boolean(), nullable=False),
        sa.Column('inputs', sa.JSON(), nullable=False),
        sa.Column('outputs', sa.JSON(), nullable=False),
        sa.Column('command', sa.JSON(), nullable=False),
        sa.Column('job_id', sa.String(length=32), nullable=True),
        sa.Column('tracked_run_id', sa.String(length=32), nullable=True),
        sa.Column('exit_code', sa.Integer(), nullable=True),
        sa.Column('log_digest', sa.String(length=64), nullable=True),
        sa.Column('started_at', UTC, nullable=True),
        sa.Column('ended_at', UTC, nullable=True),
        sa.Column('error', sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(['run_id'], ['pipeline_runs.id'], name='fk_pipeline_steps_run_id_pipeline_runs',
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('run_id', 'name', name='pk_pipeline_steps'),
    )
    op.create_index('ix_pipeline_steps_cache_key', 'pipeline_steps', ['cache_key'])
    op.create_table(
        'step_cache',
        sa.Column('key', sa.String(length=64), nullable=False),
        sa.Column('pipeline', sa.String(length=128), nullable=False),
        sa.Column('step', sa.String(length=64), nullable=False),
        sa.Column('outputs', sa.JSON(), nullable=False),
        sa.Column('log_digest', sa.String(length=64), nullable=True),
        sa.Column('run_id', sa.String(length=32), nullable=False),
        sa.Column('job_id', sa.String(length=32), nullable=True),
        sa.Column('tracked_run_id', sa.String(length=32), nullable=True),
        sa.Column('seconds', sa.Float(), nullable=False),
        sa.Column('hits', sa.Integer(), nullable=False),
        sa.Column('created_at', UTC, nullable=False),
        sa.Column('last_hit_at', UTC, nullable=True),
        sa.PrimaryKeyConstraint('key', name='pk_step_cache'),
    )


def downgrade() -> None:
    op.drop_table('step_cache')
    op.drop_index('ix_pipeline_steps_cache_key', table_name='pipeline_steps')
    op.drop_table('pipeline_steps')
    op.drop_index('ix_pipeline_runs_started', table_name='pipeline_runs')
    op.drop_index('ix_pipeline_runs_pipeline_started', table_name='pipeline_runs')
    op.drop_table('pipeline_runs')
