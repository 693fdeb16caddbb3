"""models: the registry — models, versions with lineage, aliases, alias moves, gate reports, pinned cases

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29 13:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import medcycle.store.base

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('models',
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('task', sa.String(length=64), nullable=True),
    sa.Column('created_by', sa.String(length=64), nullable=False),
    sa.Column('created_at', medcycle.store.base.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_models'))
    )
    op.create_table('model_versions',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('model', sa.String(length=128), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('weights_digest', sa.String(length=64), nullable=False),
    sa.Column('weights_bytes', sa.Integer(), nullable=True),
    sa.Column('run_id', sa.String(length=64), nullable=True),
    sa.Column('dataset_ref', sa.String(length=256), nullable=True),
    sa.Column('dataset_digest', sa.String(length=64), nullable=True),
    sa.Column('label_set', sa.String(length=128), nullable=True),
    sa.Column('commit', sa.String(length=64), nullable=True),
    sa.Column('metrics', sa.JSON(), nullable=False),
    sa.Column('params', sa.JSON(), nullable=False),
    sa.Column('contract', sa.JSON(), nullable=False),
    sa.Column('card', sa.JSON(), nullable=False),
    sa.Column('ood_gate_digest', sa.String(length=64), nullable=True),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('created_by', sa.String(length=64), nullable=False),
    sa.Column('created_at', medcycle.store.base.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['model'], ['models.name'], name=op.f('fk_model_versions_model_models'),
                            ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_model_versions')),
    sa.UniqueConstraint('model', 'version', name='uq_model_versions_model_version')
    )
    op.create_index(op.f('ix_model_versions_model'), 'model_versions', ['model'], unique=False)
    op.create_index(op.f('ix_model_versions_weights_digest'), 'model_versions', ['weights_digest'], unique=False)
    op.create_index(op.f('ix_model_versions_run_id'), 'model_versions', ['run_id'], unique=False)
    op.create_index(op.f('ix_model_versions_dataset_digest'), 'model_versions', ['dataset_digest'], unique=False)
    op.create_table('model_aliases',
    sa.Column('model', sa.String(length=128), nullable=False),
    sa.Column('alias', sa.String(length=64), nullable=False),
    sa.Column('version_id', sa.String(length=32), nullable=False),
    sa.Column('updated_by', sa.String(length=64), nullable=False),
    sa.Column('updated_at', medcycle.store.base.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['model'], ['models.name'], name=op.f('fk_model_aliases_model_models'),
                            ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['version_id'], ['model_versions.id'],
                            name=op.f('fk_model_aliases_version_id_model_versions'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('model', 'alias', name=op.f('pk_model_aliases'))
    )
    op.create_table('model_alias_events',
    sa.Column('seq', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('model', sa.String(length=128), nullable=False),
    sa.Column('alias', sa.String(length=64), nullable=False),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('from_version_id', sa.String(length=32), nullable=True),
    sa.Column('to_version_id', sa.String(length=32), nullable=True),
    sa.Column('report_id', sa.String(length=32), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('by', sa.String(length=64), nullable=False),
    sa.Column('at', medcycle.store.base.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_model_alias_events'))
    )
    op.create_index('ix_model_alias_events_model_alias', 'model_alias_events', ['model', 'alias', 'seq'],
                    unique=False)
    op.create_table('model_gate_reports',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('version_id', sa.String(length=32), nullable=False),
    sa.Column('passed', sa.Boolean(), nullable=False),
    sa.Column('policy', sa.String(length=256), nullable=True),
    sa.Column('dataset_digest', sa.String(length=64), nullable=True),
    sa.Column('summary', sa.JSON(), nullable=False),
    sa.Column('report_digest', sa.String(length=64), nullable=True),
    sa.Column('created_by', sa.String(length=64), nullable=False),
    sa.Column('created_at', medcycle.store.base.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['version_id'], ['model_versions.id'],
                            name=op.f('fk_model_gate_reports_version_id_model_versions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_model_gate_reports'))
    )
    op.create_index(op.f('ix_model_gate_reports_version_id'), 'model_gate_reports', ['version_id'], unique=False)
    op.create_table('model_pinned_cases',
    sa.Column('model', sa.String(length=128), nullable=False),
    sa.Column('case_key', sa.String(length=128), nullable=False),
    sa.Column('expected', sa.String(length=128), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('from_version_id', sa.String(length=32), nullable=True),
    sa.Column('pinned_by', sa.String(length=64), nullable=False),
    sa.Column('pinned_at', medcycle.store.base.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['model'], ['models.name'], name=op.f('fk_model_pinned_cases_model_models'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('model', 'case_key', name=op.f('pk_model_pinned_cases'))
    )


def downgrade() -> None:
    op.drop_table('model_pinned_cases')
    op.drop_index(op.f('ix_model_gate_reports_version_id'), table_name='model_gate_reports')
    op.drop_table('model_gate_reports')
    op.drop_index('ix_model_alias_events_model_alias', table_name='model_alias_events')
    op.drop_table('model_alias_events')
    op.drop_table('model_aliases')
    op.drop_index(op.f('ix_model_versions_dataset_digest'), table_name='model_versions')
    op.drop_index(op.f('ix_model_versions_run_id'), table_name='model_versions')
    op.drop_index(op.f('ix_model_versions_weights_digest'), table_name='model_versions')
    op.drop_index(op.f('ix_model_versions_model'), table_name='model_versions')
    op.drop_table('model_versions')
    op.drop_table('models')
