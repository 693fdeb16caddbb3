"""labels: reader qualification (exams, attempts, certifications, honeypots) and active learning (cached scores,
chosen batches)

Down revision: 0011 (monitoring); 0010 (serving) comes before it.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-29 13:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import medcycle.store.base

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('label_active_scores',
    sa.Column('model_version', sa.String(length=128), nullable=False),
    sa.Column('measure', sa.String(length=128), nullable=False),
    sa.Column('item_uid', sa.String(length=64), nullable=False),
    sa.Column('value', sa.Float(), nullable=True),
    sa.Column('vector', sa.JSON(), nullable=True),
    sa.Column('computed_at', medcycle.store.base.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('model_version', 'measure', 'item_uid', name=op.f('pk_label_active_scores'))
    )
    op.create_table('label_active_batches',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('model_version', sa.String(length=128), nullable=True),
    sa.Column('strategy', sa.String(length=32), nullable=False),
    sa.Column('params', sa.JSON(), nullable=False),
    sa.Column('seed', sa.Integer(), nullable=False),
    sa.Column('n_candidates', sa.Integer(), nullable=False),
    sa.Column('n_labelled', sa.Integer(), nullable=False),
    sa.Column('items', sa.JSON(), nullable=False),
    sa.Column('scores', sa.JSON(), nullable=False),
    sa.Column('task_id', sa.Integer(), nullable=True),
    sa.Column('created_by', sa.String(length=64), nullable=False),
    sa.Column('created_at', medcycle.store.base.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['task_id'], ['label_tasks.id'], name=op.f('fk_label_active_batches_task_id_label_tasks')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_label_active_batches'))
    )
    with op.batch_alter_table('label_active_batches', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_label_active_batches_task_id'), ['task_id'], unique=False)

    op.create_table('label_exams',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('purpose', sa.String(length=16), nullable=False),
    sa.Column('label_set_id', sa.String(length=64), nullable=False),
    sa.Column('schema_id', sa.String(length=64), nullable=False),
    sa.Column('level', sa.String(length=16), nullable=False),
    sa.Column('n_items', sa.Integer(), nullable=False),
    sa.Column('thresholds', sa.JSON(), nullable=False),
    sa.Column('negative_labels', sa.JSON(), nullable=False),
    sa.Column('valid_days', sa.Integer(), nullable=True),
    sa.Column('guards', sa.String(length=64), nullable=True),
    sa.Column('window', sa.Integer(), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('created_by', sa.String(length=64), nullable=False),
    sa.Column('created_at', medcycle.store.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', medcycle.store.base.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['label_set_id'], ['annotation_sets.id'], name=op.f('fk_label_exams_label_set_id_annotation_sets')),
    sa.ForeignKeyConstraint(['schema_id'], ['label_schemas.id'], name=op.f('fk_label_exams_schema_id_label_schemas')),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_label_exams'))
    )
    with op.batch_alter_table('label_exams', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_label_exams_label_set_id'), ['label_set_id'], unique=False)

    op.create_table('label_exam_attempts',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('exam', sa.String(length=64), nullable=False),
    sa.Column('reader', sa.String(length=64), nullable=False),
    sa.Column('task_id', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('started_at', medcycle.store.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('finished_at', medcycle.store.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('grade', sa.JSON(), nullable=True),
    sa.Column('item_grades', sa.JSON(), nullable=False),
    sa.Column('failures', sa.JSON(), nullable=False),
    sa.Column('created_by', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['exam'], ['label_exams.name'], name=op.f('fk_label_exam_attempts_exam_label_exams')),
    sa.ForeignKeyConstraint(['task_id'], ['label_tasks.id'], name=op.f('fk_label_exam_attempts_task_id_label_tasks')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_label_exam_attempts'))
    )
    with op.batch_alter_table('label_exam_attempts', schema=None) as batch_op:
        batch_op.create_index('ix_label_exam_attempts_reader_exam', ['reader', 'exam'], unique=False)
        batch_op.create_index(batch_op.f('ix_label_exam_attempts_task_id'), ['task_id'], unique=False)

    op.create_table('label_honeypots',
    sa.Column('task_id', sa.Integer(), nullable=False),
    sa.Column('item_uid', sa.String(length=64), nullable=False),
    sa.Column('reader', sa.String(length=64), nullable=False),
    sa.Column('pool', sa.String(length=64), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('planted_by', sa.String(length=64), nullable=False),
    sa.Column('planted_at', medcycle.store.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('scored_at', medcycle.store.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('grade', sa.JSON(), nullable=True),
    sa.ForeignKeyConstraint(['pool'], ['label_exams.name'], name=op.f('fk_label_honeypots_pool_label_exams')),
    sa.ForeignKeyConstraint(['task_id'], ['label_tasks.id'], name=op.f('fk_label_honeypots_task_id_label_tasks'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('task_id', 'item_uid', name=op.f('pk_label_honeypots'))
    )
    with op.batch_alter_table('label_honeypots', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_label_honeypots_pool'), ['pool'], unique=False)
        batch_op.create_index('ix_label_honeypots_reader_state', ['reader', 'state'], unique=False)

    op.create_table('label_certifications',
    sa.Column('reader', sa.String(length=64), nullable=False),
    sa.Column('exam', sa.String(length=64), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('attempt_id', sa.Integer(), nullable=True),
    sa.Column('granted_at', medcycle.store.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('expires_at', medcycle.store.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('updated_by', sa.String(length=64), nullable=False),
    sa.Column('updated_at', medcycle.store.base.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['attempt_id'], ['label_exam_attempts.id'], name=op.f('fk_label_certifications_attempt_id_label_exam_attempts')),
    sa.ForeignKeyConstraint(['exam'], ['label_exams.name'], name=op.f('fk_label_certifications_exam_label_exams')),
    sa.PrimaryKeyConstraint('reader', 'exam', name=op.f('pk_label_certifications'))
    )
    with op.batch_alter_table('label_certifications', schema=None) as batch_op:
        batch_op.create_index('ix_label_certifications_state', ['state', 'expires_at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('label_certifications', schema=None) as batch_op:
        batch_op.drop_index('ix_label_certifications_state')

    op.drop_table('label_certifications')
    with op.batch_alter_table('label_honeypots', schema=None) as batch_op:
        batch_op.drop_index('ix_label_honeypots_reader_state')
        batch_op.drop_index(batch_op.f('ix_label_honeypots_pool'))

    op.drop_table('label_honeypots')
    with op.batch_alter_table('label_exam_attempts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_label_exam_attempts_task_id'))
        batch_op.drop_index('ix_label_exam_attempts_reader_exam')

    op.drop_table('label_exam_attempts')
    with op.batch_alter_table('label_exams', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_label_exams_label_set_id'))

    op.drop_table('label_exams')
    with op.batch_alter_table('label_active_batches', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_label_active_batches_task_id'))

    op.drop_table('label_active_batches')
    op.drop_table('label_active_scores')
