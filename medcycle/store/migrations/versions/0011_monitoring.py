"""monitoring: the prediction log, drift references and windows, alerts, silences, reports

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-29 16:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import medcycle.store.base

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('monitoring_alerts',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('key', sa.String(length=256), nullable=False),
    sa.Column('group_key', sa.String(length=256), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('severity', sa.String(length=16), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('title', sa.String(length=512), nullable=False),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.Column('links', sa.JSON(), nullable=False),
    sa.Column('model_version', sa.String(length=160), nullable=True),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.Column('first_at', medcycle.store.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_at', medcycle.store.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('notified_at', medcycle.store.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('notified_severity', sa.String(length=16), nullable=True),
    sa.Column('acked_by', sa.String(length=64), nullable=True),
    sa.Column('acked_at', medcycle.store.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('resolved_at', medcycle.store.base.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_monitoring_alerts'))
    )
    op.create_index(op.f('ix_monitoring_alerts_group_key'), 'monitoring_alerts', ['group_key'], unique=False)
    op.create_index('ix_monitoring_alerts_key_state', 'monitoring_alerts', ['key', 'state'], unique=False)
    op.create_index(op.f('ix_monitoring_alerts_state'), 'monitoring_alerts', ['state'], unique=False)
    op.create_table('monitoring_drift_windows',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('model_version', sa.String(length=160), nullable=False),
    sa.Column('reference_id', sa.String(length=32), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('first_at', medcycle.store.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_at', medcycle.store.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_prediction_id', sa.String(length=32), nullable=False),
    sa.Column('signals', sa.JSON(), nullable=False),
    sa.Column('drifted', sa.JSON(), nullable=False),
    sa.Column('paged', sa.JSON(), nullable=False),
    sa.Column('created_at', medcycle.store.base.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_monitoring_drift_windows')),
    sa.UniqueConstraint('model_version', 'seq', name='uq_monitoring_drift_windows_version_seq')
    )
    op.create_index(op.f('ix_monitoring_drift_windows_last_at'), 'monitoring_drift_windows', ['last_at'], unique=False)
    op.create_table('monitoring_references',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('model_version', sa.String(length=160), nullable=False),
    sa.Column('model_version_id', sa.String(length=32), nullable=True),
    sa.Column('dataset_ref', sa.String(length=256), nullable=True),
    sa.Column('dataset_digest', sa.String(length=64), nullable=True),
    sa.Column('split', sa.String(length=64), nullable=True),
    sa.Column('cases', sa.Integer(), nullable=False),
    sa.Column('window', sa.Integer(), nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('summary', sa.JSON(), nullable=False),
    sa.Column('created_by', sa.String(length=64), nullable=False),
    sa.Column('created_at', medcycle.store.base.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_monitoring_references'))
    )
    op.create_index(op.f('ix_monitoring_references_model_version'), 'monitoring_references', ['model_version'],
                    unique=False)
    op.create_table('monitoring_reports',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('slot', sa.String(length=32), nullable=True),
    sa.Column('period_start', medcycle.store.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('period_end', medcycle.store.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('summary', sa.JSON(), nullable=False),
    sa.Column('html_digest', sa.String(length=64), nullable=False),
    sa.Column('posted_to', sa.String(length=256), nullable=True),
    sa.Column('post_status', sa.String(length=256), nullable=True),
    sa.Column('created_by', sa.String(length=64), nullable=False),
    sa.Column('created_at', medcycle.store.base.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_monitoring_reports')),
    sa.UniqueConstraint('slot', name=op.f('uq_monitoring_reports_slot'))
    )
    op.create_index(op.f('ix_monitoring_reports_period_end'), 'monitoring_reports', ['period_end'], unique=False)
    op.create_table('monitoring_silences',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('pattern', sa.String(length=256), nullable=False),
    sa.Column('until', medcycle.store.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('created_by', sa.String(length=64), nullable=False),
    sa.Column('created_at', medcycle.store.base.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_monitoring_silences'))
    )
    op.create_index(op.f('ix_monitoring_silences_until'), 'monitoring_silences', ['until'], unique=False)
    op.create_table('prediction_log',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('at', medcycle.store.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('job_id', sa.String(length=64), nullable=True),
    sa.Column('model', sa.String(length=128), nullable=False),
    sa.Column('model_version', sa.String(length=160), nullable=False),
    sa.Column('model_version_id', sa.String(length=32), nullable=True),
    sa.Column('source', sa.String(length=128), nullable=True),
    sa.Column('manufacturer', sa.String(length=128), nullable=True),
    sa.Column('device_model', sa.String(length=128), nullable=True),
    sa.Column('modality', sa.String(length=16), nullable=True),
    sa.Column('body_part', sa.String(length=64), nullable=True),
    sa.Column('view_position', sa.String(length=16), nullable=True),
    sa.Column('header', sa.JSON(), nullable=False),
    sa.Column('input_digests', sa.JSON(), nullable=False),
    sa.Column('input_stats', sa.JSON(), nullable=False),
    sa.Column('ood_score', sa.Float(), nullable=True),
    sa.Column('ood_ok', sa.Boolean(), nullable=True),
    sa.Column('ood_layer', sa.String(length=16), nullable=True),
    sa.Column('ood_reasons', sa.JSON(), nullable=False),
    sa.Column('probabilities', sa.JSON(), nullable=False),
    sa.Column('predicted', sa.String(length=128), nullable=True),
    sa.Column('score', sa.Float(), nullable=True),
    sa.Column('mask_area', sa.Float(), nullable=True),
    sa.Column('mask_components', sa.Integer(), nullable=True),
    sa.Column('mask_digest', sa.String(length=64), nullable=True),
    sa.Column('embedding', sa.LargeBinary(), nullable=True),
    sa.Column('latency_ms', sa.Float(), nullable=True),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('error_class', sa.String(length=128), nullable=True),
    sa.Column('error_message', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_prediction_log'))
    )
    op.create_index(op.f('ix_prediction_log_at'), 'prediction_log', ['at'], unique=False)
    op.create_index(op.f('ix_prediction_log_job_id'), 'prediction_log', ['job_id'], unique=False)
    op.create_index(op.f('ix_prediction_log_model'), 'prediction_log', ['model'], unique=False)
    op.create_index(op.f('ix_prediction_log_outcome'), 'prediction_log', ['outcome'], unique=False)
    op.create_index('ix_prediction_log_source_at', 'prediction_log', ['source', 'at'], unique=False)
    op.create_index('ix_prediction_log_version_at', 'prediction_log', ['model_version', 'at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_prediction_log_version_at', table_name='prediction_log')
    op.drop_index('ix_prediction_log_source_at', table_name='prediction_log')
    op.drop_index(op.f('ix_prediction_log_outcome'), table_name='prediction_log')
    op.drop_index(op.f('ix_prediction_log_model'), table_name='prediction_log')
    op.drop_index(op.f('ix_prediction_log_job_id'), table_name='prediction_log')
    op.drop_index(op.f('ix_prediction_log_at'), table_name='prediction_log')
    op.drop_table('prediction_log')
    op.drop_index(op.f('ix_monitoring_silences_until'), table_name='monitoring_silences')
    op.drop_table('monitoring_silences')
    op.drop_index(op.f('ix_monitoring_reports_period_end'), table_name='monitoring_reports')
    op.drop_table('monitoring_reports')
    op.drop_index(op.f('ix_monitoring_references_model_version'), table_name='monitoring_references')
    op.drop_table('monitoring_references')
    op.drop_index(op.f('ix_monitoring_drift_windows_last_at'), table_name='monitoring_drift_windows')
    op.drop_table('monitoring_drift_windows')
    op.drop_index(op.f('ix_monitoring_alerts_state'), table_name='monitoring_alerts')
    op.drop_index('ix_monitoring_alerts_key_state', table_name='monitoring_alerts')
    op.drop_index(op.f('ix_monitoring_alerts_group_key'), table_name='monitoring_alerts')
    op.drop_table('monitoring_alerts')
