"""models: reviewers' verdicts on evaluated cases (the review gallery)

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-29 16:20:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import medcycle.store.base

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('model_case_reviews',
    sa.Column('report_id', sa.String(length=32), nullable=False),
    sa.Column('case_key', sa.String(length=128), nullable=False),
    sa.Column('model', sa.String(length=128), nullable=False),
    sa.Column('verdict', sa.String(length=16), nullable=False),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('reviewer', sa.String(length=64), nullable=False),
    sa.Column('reviewed_at', medcycle.store.base.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['report_id'], ['model_gate_reports.id'],
                            name=op.f('fk_model_case_reviews_report_id_model_gate_reports'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('report_id', 'case_key', name=op.f('pk_model_case_reviews'))
    )
    op.create_index('ix_model_case_reviews_model_case', 'model_case_reviews', ['model', 'case_key'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_model_case_reviews_model_case', table_name='model_case_reviews')
    op.drop_table('model_case_reviews')
