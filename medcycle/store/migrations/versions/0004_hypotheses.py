"""hypotheses: the register, answers, votes, status/decision history, links to runs and dataset versions

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 10:05:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import medcycle.store.base

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('hypotheses',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('title', sa.String(length=200), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('owner', sa.String(length=64), nullable=False),
    sa.Column('project', sa.String(length=128), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('status_reason', sa.Text(), nullable=True),
    sa.Column('status_changed_at', medcycle.store.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('ice_impact', sa.Integer(), nullable=True),
    sa.Column('ice_confidence', sa.Integer(), nullable=True),
    sa.Column('ice_ease', sa.Integer(), nullable=True),
    sa.Column('ice_score', sa.Float(), nullable=True),
    sa.Column('ice_by', sa.String(length=64), nullable=True),
    sa.Column('ice_at', medcycle.store.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('rice_reach', sa.Float(), nullable=True),
    sa.Column('rice_impact', sa.Float(), nullable=True),
    sa.Column('rice_confidence', sa.Float(), nullable=True),
    sa.Column('rice_effort', sa.Float(), nullable=True),
    sa.Column('rice_score', sa.Float(), nullable=True),
    sa.Column('rice_by', sa.String(length=64), nullable=True),
    sa.Column('rice_at', medcycle.store.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('decision', sa.String(length=16), nullable=True),
    sa.Column('decision_by', sa.String(length=64), nullable=True),
    sa.Column('decision_note', sa.Text(), nullable=True),
    sa.Column('decision_at', medcycle.store.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_by', sa.String(length=64), nullable=False),
    sa.Column('created_at', medcycle.store.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', medcycle.store.base.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_hypotheses'))
    )
    with op.batch_alter_table('hypotheses', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_hypotheses_owner'), ['owner'], unique=False)
        batch_op.create_index(batch_op.f('ix_hypotheses_project'), ['project'], unique=False)
        batch_op.create_index(batch_op.f('ix_hypotheses_status'), ['status'], unique=False)

    op.create_table('hypothesis_answers',
    sa.Column('hypothesis_id', sa.Integer(), nullable=False),
    sa.Column('question', sa.String(length=32), nullable=False),
    sa.Column('answer', sa.Text(), nullable=False),
    sa.Column('confidence', sa.String(length=16), nullable=True),
    sa.Column('notes', sa.Text(), nullable=True),
    sa.Column('answered_by', sa.String(length=64), nullable=False),
    sa.Column('answered_at', medcycle.store.base.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['hypothesis_id'], ['hypotheses.id'],
                            name=op.f('fk_hypothesis_answers_hypothesis_id_hypotheses'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('hypothesis_id', 'question', name=op.f('pk_hypothesis_answers'))
    )
    op.create_table('hypothesis_votes',
    sa.Column('hypothesis_id', sa.Integer(), nullable=False),
    sa.Column('voter', sa.String(length=64), nullable=False),
    sa.Column('value', sa.Integer(), nullable=False),
    sa.Column('comment', sa.Text(), nullable=True),
    sa.Column('created_at', medcycle.store.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', medcycle.store.base.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['hypothesis_id'], ['hypotheses.id'],
                            name=op.f('fk_hypothesis_votes_hypothesis_id_hypotheses'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('hypothesis_id', 'voter', name=op.f('pk_hypothesis_votes'))
    )
    op.create_table('hypothesis_history',
    sa.Column('seq', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('hypothesis_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('from_value', sa.String(length=16), nullable=True),
    sa.Column('to_value', sa.String(length=16), nullable=False),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('actor', sa.String(length=64), nullable=False),
    sa.Column('at', medcycle.store.base.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['hypothesis_id'], ['hypotheses.id'],
                            name=op.f('fk_hypothesis_history_hypothesis_id_hypotheses'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_hypothesis_history'))
    )
    with op.batch_alter_table('hypothesis_history', schema=None) as batch_op:
        batch_op.create_index('ix_hypothesis_history_hypothesis', ['hypothesis_id', 'seq'], unique=False)

    op.create_table('hypothesis_links',
    sa.Column('seq', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('hypothesis_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('target', sa.String(length=256), nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=True),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('created_by', sa.String(length=64), nullable=False),
    sa.Column('created_at', medcycle.store.base.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['hypothesis_id'], ['hypotheses.id'],
                            name=op.f('fk_hypothesis_links_hypothesis_id_hypotheses'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('seq', name=op.f('pk_hypothesis_links')),
    sa.UniqueConstraint('hypothesis_id', 'kind', 'target', name='uq_hypothesis_links_target')
    )
    with op.batch_alter_table('hypothesis_links', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_hypothesis_links_digest'), ['digest'], unique=False)
        batch_op.create_index('ix_hypothesis_links_kind_target', ['kind', 'target'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('hypothesis_links', schema=None) as batch_op:
        batch_op.drop_index('ix_hypothesis_links_kind_target')
        batch_op.drop_index(batch_op.f('ix_hypothesis_links_digest'))

    op.drop_table('hypothesis_links')
    with op.batch_alter_table('hypothesis_history', schema=None) as batch_op:
        batch_op.drop_index('ix_hypothesis_history_hypothesis')

    op.drop_table('hypothesis_history')
    op.drop_table('hypothesis_votes')
    op.drop_table('hypothesis_answers')
    with op.batch_alter_table('hypotheses', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_hypotheses_status'))
        batch_op.drop_index(batch_op.f('ix_hypotheses_project'))
        batch_op.drop_index(batch_op.f('ix_hypotheses_owner'))

    op.drop_table('hypotheses')
