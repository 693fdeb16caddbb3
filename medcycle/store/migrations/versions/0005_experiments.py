"""experiments: projects, runs, params, tags, compact metric series, artifacts, captures, logs

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 11:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import medcycle.store.base

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

UTC = medcycle.store.base.UTCDateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        'projects',
        sa.Column('id', sa.String(length=32), nullable=False),
        sa.Column('name', sa.String(length=128), nullable=False),
        sa.Column('description', sa.Text(), nullable=True),
        sa.Column('created_by', sa.String(length=64), nullable=False),
        sa.Column('created_at', UTC, nullable=False),
        sa.PrimaryKeyConstraint('id', name='pk_projects'),
        sa.UniqueConstraint('name', name='uq_projects_name'),
    )
    op.create_table(
        'runs',
        sa.Column('id', sa.String(length=32), nullable=False),
        sa.Column('project_id', sa.String(length=32), nullable=False),
        sa.Column('name', sa.String(length=256), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('hypothesis', sa.String(length=128), nullable=True),
        sa.Column('dataset_ref', sa.String(length=256), nullable=True),
        sa.Column('dataset_digest', sa.String(length=64), nullable=True),
        sa.Column('created_by', sa.String(length=64), nullable=False),
        sa.Column('host', sa.String(length=256), nullable=True),
        sa.Column('started_at', UTC, nullable=False),
        sa.Column('ended_at', UTC, nullable=True),
        sa.Column('updated_at', UTC, nullable=False),
        sa.Column('applied_seq', sa.BigInteger(), nullable=False),
        sa.Column('seeded', sa.Boolean(), nullable=False),
        sa.Column('verdict', sa.String(length=32), nullable=False),
        sa.Column('verdict_reasons', sa.JSON(), nullable=False),
        sa.Column('log_bytes', sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(['project_id'], ['projects.id'], name='fk_runs_project_id_projects'),
        sa.PrimaryKeyConstraint('id', name='pk_runs'),
    )
    op.create_index('ix_runs_project_started', 'runs', ['project_id', 'started_at'])
    op.create_index('ix_runs_started', 'runs', ['started_at'])
    op.create_index('ix_runs_status', 'runs', ['status'])
    op.create_index('ix_runs_hypothesis', 'runs', ['hypothesis'])
    op.create_index('ix_runs_dataset_digest', 'runs', ['dataset_digest'])

    op.create_table(
        'run_params',
        sa.Column('run_id', sa.String(length=32), nullable=False),
        sa.Column('key', sa.String(length=256), nullable=False),
        sa.Column('value', sa.Text(), nullable=False),
        sa.Column('value_num', sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name='fk_run_params_run_id_runs', ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('run_id', 'key', name='pk_run_params'),
    )
    op.create_index('ix_run_params_key_num', 'run_params', ['key', 'value_num'])
    op.create_table(
        'run_tags',
        sa.Column('run_id', sa.String(length=32), nullable=False),
        sa.Column('key', sa.String(length=256), nullable=False),
        sa.Column('value', sa.String(length=1024), nullable=False),
        sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name='fk_run_tags_run_id_runs', ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('run_id', 'key', name='pk_run_tags'),
    )
    op.create_index('ix_run_tags_key_value', 'run_tags', ['key', 'value'])
    op.create_table(
        'run_metrics',
        sa.Column('run_id', sa.String(length=32), nullable=False),
        sa.Column('key', sa.String(length=256), nullable=False),
        sa.Column('count', sa.BigInteger(), nullable=False),
        sa.Column('chunks', sa.Integer(), nullable=False),
        sa.Column('last_value', sa.Float(), nullable=True),
        sa.Column('last_step', sa.BigInteger(), nullable=False),
        sa.Column('last_time', sa.Float(), nullable=False),
        sa.Column('min_value', sa.Float(), nullable=True),
        sa.Column('max_value', sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name='fk_run_metrics_run_id_runs', ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('run_id', 'key', name='pk_run_metrics'),
    )
    op.create_index('ix_run_metrics_key_last', 'run_metrics', ['key', 'last_value'])
    op.create_table(
        'run_metric_chunks',
        sa.Column('run_id', sa.String(length=32), nullable=False),
        sa.Column('key', sa.String(length=256), nullable=False),
        sa.Column('chunk', sa.Integer(), nullable=False),
        sa.Column('n', sa.Integer(), nullable=False),
        sa.Column('step_min', sa.BigInteger(), nullable=False),
        sa.Column('step_max', sa.BigInteger(), nullable=False),
        sa.Column('format', sa.Integer(), nullable=False),
        sa.Column('data', sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name='fk_run_metric_chunks_run_id_runs',
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('run_id', 'key', 'chunk', name='pk_run_metric_chunks'),
    )
    op.create_table(
        'run_artifacts',
        sa.Column('seq', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('run_id', sa.String(length=32), nullable=False),
        sa.Column('name', sa.String(length=512), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('digest', sa.String(length=64), nullable=True),
        sa.Column('size', sa.BigInteger(), nullable=True),
        sa.Column('step', sa.BigInteger(), nullable=True),
        sa.Column('meta', sa.JSON(), nullable=False),
        sa.Column('created_at', UTC, nullable=False),
        sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name='fk_run_artifacts_run_id_runs', ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('seq', name='pk_run_artifacts'),
    )
    op.create_index('ix_run_artifacts_run', 'run_artifacts', ['run_id', 'kind'])
    op.create_index('ix_run_artifacts_digest', 'run_artifacts', ['digest'])
    op.create_table(
        'run_captures',
        sa.Column('run_id', sa.String(length=32), nullable=False),
        sa.Column('commit', sa.String(length=64), nullable=True),
        sa.Column('branch', sa.String(length=256), nullable=True),
        sa.Column('dirty', sa.Boolean(), nullable=True),
        sa.Column('pushed', sa.Boolean(), nullable=True),
        sa.Column('diff_digest', sa.String(length=64), nullable=True),
        sa.Column('packages_digest', sa.String(length=64), nullable=True),
        sa.Column('packages_hash', sa.String(length=64), nullable=True),
        sa.Column('data', sa.JSON(), nullable=False),
        sa.Column('seeds', sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name='fk_run_captures_run_id_runs', ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('run_id', name='pk_run_captures'),
    )
    op.create_index('ix_run_captures_commit', 'run_captures', ['commit'])
    op.create_index('ix_run_captures_packages_hash', 'run_captures', ['packages_hash'])
    op.create_table(
        'run_logs',
        sa.Column('run_id', sa.String(length=32), nullable=False),
        sa.Column('seq', sa.BigInteger(), nullable=False),
        sa.Column('stream', sa.String(length=8), nullable=False),
        sa.Column('at', UTC, nullable=False),
        sa.Column('text', sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(['run_id'], ['runs.id'], name='fk_run_logs_run_id_runs', ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('run_id', 'seq', name='pk_run_logs'),
    )


def downgrade() -> None:
    for table in ('run_logs', 'run_captures', 'run_artifacts', 'run_metric_chunks', 'run_metrics', 'run_tags',
                  'run_params'):
        op.drop_table(table)
    for index in ('ix_runs_dataset_digest', 'ix_runs_hypothesis', 'ix_runs_status', 'ix_runs_started',
                  'ix_runs_project_started'):
        op.drop_index(index, table_name='runs')
    op.drop_table('runs')
    op.drop_table('projects')
