"""labels: schemas (versioned), readers, immutable annotations, tasks, assignments, adjudications, label sets

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import medcycle.store.base

IMMUTABLE = ("label_schemas", "annotations", "annotation_sets", "annotation_set_members")

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('label_readers',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('qualified', sa.Boolean(), nullable=False),
    sa.Column('senior', sa.Boolean(), nullable=False),
    sa.Column('certification', sa.String(length=128), nullable=True),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('updated_by', sa.String(length=64), nullable=False),
    sa.Column('created_at', medcycle.store.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', medcycle.store.base.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_label_readers'))
    )
    op.create_table('label_schemas',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('level', sa.String(length=16), nullable=False),
    sa.Column('multi_label', sa.Boolean(), nullable=False),
    sa.Column('classes', sa.JSON(), nullable=False),
    sa.Column('origin', sa.String(length=256), nullable=True),
    sa.Column('created_by', sa.String(length=64), nullable=False),
    sa.Column('created_at', medcycle.store.base.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_label_schemas')),
    sa.UniqueConstraint('name', 'version', name='uq_label_schemas_name_version')
    )
    with op.batch_alter_table('label_schemas', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_label_schemas_name'), ['name'], unique=False)

    op.create_table('annotation_sets',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('schema_id', sa.String(length=64), nullable=False),
    sa.Column('level', sa.String(length=16), nullable=False),
    sa.Column('classes', sa.JSON(), nullable=False),
    sa.Column('n_items', sa.Integer(), nullable=False),
    sa.Column('n_annotations', sa.Integer(), nullable=False),
    sa.Column('bytes', sa.BigInteger(), nullable=False),
    sa.Column('origin', sa.String(length=256), nullable=True),
    sa.Column('created_by', sa.String(length=64), nullable=False),
    sa.Column('created_at', medcycle.store.base.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['schema_id'], ['label_schemas.id'], name=op.f('fk_annotation_sets_schema_id_label_schemas')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_annotation_sets'))
    )
    with op.batch_alter_table('annotation_sets', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_annotation_sets_schema_id'), ['schema_id'], unique=False)

    op.create_table('label_tasks',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=128), nullable=True),
    sa.Column('schema_id', sa.String(length=64), nullable=False),
    sa.Column('level', sa.String(length=16), nullable=False),
    sa.Column('origin', sa.String(length=512), nullable=False),
    sa.Column('origin_digest', sa.String(length=64), nullable=True),
    sa.Column('readers', sa.JSON(), nullable=False),
    sa.Column('readers_per_item', sa.Integer(), nullable=False),
    sa.Column('blinded', sa.Boolean(), nullable=False),
    sa.Column('seed', sa.Integer(), nullable=False),
    sa.Column('due_at', medcycle.store.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('adjudication_threshold', sa.Float(), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('n_items', sa.Integer(), nullable=False),
    sa.Column('created_by', sa.String(length=64), nullable=False),
    sa.Column('created_at', medcycle.store.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', medcycle.store.base.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['schema_id'], ['label_schemas.id'], name=op.f('fk_label_tasks_schema_id_label_schemas')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_label_tasks'))
    )
    with op.batch_alter_table('label_tasks', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_label_tasks_schema_id'), ['schema_id'], unique=False)

    op.create_table('annotations',
    sa.Column('id', sa.String(length=64), nullable=False),
    sa.Column('item_uid', sa.String(length=64), nullable=False),
    sa.Column('level', sa.String(length=16), nullable=False),
    sa.Column('task_id', sa.Integer(), nullable=True),
    sa.Column('reader', sa.String(length=64), nullable=False),
    sa.Column('round', sa.Integer(), nullable=False),
    sa.Column('stage', sa.String(length=16), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('label', sa.String(length=128), nullable=False),
    sa.Column('geometry', sa.JSON(), nullable=True),
    sa.Column('mask_digest', sa.String(length=64), nullable=True),
    sa.Column('tool', sa.String(length=128), nullable=True),
    sa.Column('seconds', sa.Float(), nullable=True),
    sa.Column('score', sa.Float(), nullable=True),
    sa.Column('attributes', sa.JSON(), nullable=False),
    sa.Column('created_at', medcycle.store.base.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['task_id'], ['label_tasks.id'], name=op.f('fk_annotations_task_id_label_tasks')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_annotations'))
    )
    with op.batch_alter_table('annotations', schema=None) as batch_op:
        batch_op.create_index('ix_annotations_item', ['item_uid'], unique=False)
        batch_op.create_index('ix_annotations_reader', ['reader'], unique=False)
        batch_op.create_index('ix_annotations_task_item', ['task_id', 'item_uid'], unique=False)

    op.create_table('label_adjudications',
    sa.Column('task_id', sa.Integer(), nullable=False),
    sa.Column('item_uid', sa.String(length=64), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('metric', sa.String(length=32), nullable=False),
    sa.Column('agreement', sa.Float(), nullable=False),
    sa.Column('threshold', sa.Float(), nullable=False),
    sa.Column('opened_at', medcycle.store.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('resolved_by', sa.String(length=64), nullable=True),
    sa.Column('resolved_at', medcycle.store.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('decision', sa.String(length=128), nullable=True),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('annotation_ids', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['task_id'], ['label_tasks.id'], name=op.f('fk_label_adjudications_task_id_label_tasks'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('task_id', 'item_uid', name=op.f('pk_label_adjudications'))
    )
    with op.batch_alter_table('label_adjudications', schema=None) as batch_op:
        batch_op.create_index('ix_label_adjudications_state', ['state'], unique=False)

    op.create_table('label_assignments',
    sa.Column('task_id', sa.Integer(), nullable=False),
    sa.Column('item_uid', sa.String(length=64), nullable=False),
    sa.Column('reader', sa.String(length=64), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('assigned_at', medcycle.store.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('submitted_at', medcycle.store.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('seconds', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['task_id'], ['label_tasks.id'], name=op.f('fk_label_assignments_task_id_label_tasks'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('task_id', 'item_uid', 'reader', name=op.f('pk_label_assignments'))
    )
    with op.batch_alter_table('label_assignments', schema=None) as batch_op:
        batch_op.create_index('ix_label_assignments_reader_state', ['reader', 'state'], unique=False)

    op.create_table('label_task_items',
    sa.Column('task_id', sa.Integer(), nullable=False),
    sa.Column('item_uid', sa.String(length=64), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('metric', sa.String(length=32), nullable=True),
    sa.Column('agreement', sa.Float(), nullable=True),
    sa.Column('completed_at', medcycle.store.base.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['task_id'], ['label_tasks.id'], name=op.f('fk_label_task_items_task_id_label_tasks'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('task_id', 'item_uid', name=op.f('pk_label_task_items'))
    )
    with op.batch_alter_table('label_task_items', schema=None) as batch_op:
        batch_op.create_index('ix_label_task_items_state', ['task_id', 'state'], unique=False)

    op.create_table('annotation_set_members',
    sa.Column('set_id', sa.String(length=64), nullable=False),
    sa.Column('annotation_id', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['annotation_id'], ['annotations.id'], name=op.f('fk_annotation_set_members_annotation_id_annotations')),
    sa.ForeignKeyConstraint(['set_id'], ['annotation_sets.id'], name=op.f('fk_annotation_set_members_set_id_annotation_sets')),
    sa.PrimaryKeyConstraint('set_id', 'annotation_id', name=op.f('pk_annotation_set_members'))
    )
    with op.batch_alter_table('annotation_set_members', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_annotation_set_members_annotation_id'), ['annotation_id'], unique=False)
    _create_immutability_triggers()


def _create_immutability_triggers() -> None:
    """Refuse UPDATE and DELETE on schema versions, annotations and label sets in SQL (the ORM refuses them too)."""
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute(
            "CREATE OR REPLACE FUNCTION medcycle_labels_refuse_change() RETURNS trigger AS $$ BEGIN "
            "RAISE EXCEPTION 'medcycle: rows of % are immutable (annotations, label sets and schema versions "
            "never change)', TG_TABLE_NAME USING ERRCODE = 'integrity_constraint_violation'; END $$ LANGUAGE plpgsql"
        )
        for table in IMMUTABLE:
            op.execute(f"CREATE TRIGGER trg_{table}_immutable BEFORE UPDATE OR DELETE ON {table} "
                       "FOR EACH ROW EXECUTE FUNCTION medcycle_labels_refuse_change()")
    elif dialect == "sqlite":
        for table in IMMUTABLE:
            for verb in ("UPDATE", "DELETE"):
                op.execute(f"CREATE TRIGGER trg_{table}_no_{verb.lower()} BEFORE {verb} ON {table} BEGIN "
                           f"SELECT RAISE(ABORT, 'medcycle: rows of {table} are immutable'); END")


def _drop_immutability_triggers() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        for table in IMMUTABLE:
            op.execute(f"DROP TRIGGER IF EXISTS trg_{table}_immutable ON {table}")
        op.execute("DROP FUNCTION IF EXISTS medcycle_labels_refuse_change()")
    elif dialect == "sqlite":
        for table in IMMUTABLE:
            for verb in ("update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS trg_{table}_no_{verb}")


def downgrade() -> None:
    _drop_immutability_triggers()
    with op.batch_alter_table('annotation_set_members', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_annotation_set_members_annotation_id'))

    op.drop_table('annotation_set_members')
    with op.batch_alter_table('label_task_items', schema=None) as batch_op:
        batch_op.drop_index('ix_label_task_items_state')

    op.drop_table('label_task_items')
    with op.batch_alter_table('label_assignments', schema=None) as batch_op:
        batch_op.drop_index('ix_label_assignments_reader_state')

    op.drop_table('label_assignments')
    with op.batch_alter_table('label_adjudications', schema=None) as batch_op:
        batch_op.drop_index('ix_label_adjudications_state')

    op.drop_table('label_adjudications')
    with op.batch_alter_table('annotations', schema=None) as batch_op:
        batch_op.drop_index('ix_annotations_task_item')
        batch_op.drop_index('ix_annotations_reader')
        batch_op.drop_index('ix_annotations_item')

    op.drop_table('annotations')
    with op.batch_alter_table('label_tasks', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_label_tasks_schema_id'))

    op.drop_table('label_tasks')
    with op.batch_alter_table('annotation_sets', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_annotation_sets_schema_id'))

    op.drop_table('annotation_sets')
    with op.batch_alter_table('label_schemas', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_label_schemas_name'))

    op.drop_table('label_schemas')
    op.drop_table('label_readers')
