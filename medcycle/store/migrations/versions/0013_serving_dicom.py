"""serving: the DICOM intake index (studies received through STOW-RS or the C-STORE SCP)

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-29 14:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import medcycle.store.base

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('serving_dicom_studies',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('study_key', sa.String(length=64), nullable=False),
    sa.Column('inputs_digest', sa.String(length=64), nullable=False),
    sa.Column('model', sa.String(length=256), nullable=False),
    sa.Column('job_id', sa.String(length=64), nullable=False),
    sa.Column('via', sa.String(length=16), nullable=False),
    sa.Column('calling_ae', sa.String(length=16), nullable=True),
    sa.Column('instances', sa.Integer(), nullable=False),
    sa.Column('series', sa.Integer(), nullable=False),
    sa.Column('modalities', sa.String(length=64), nullable=False),
    sa.Column('return_digest', sa.String(length=64), nullable=False),
    sa.Column('created_at', medcycle.store.base.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_serving_dicom_studies')),
    sa.UniqueConstraint('study_key', 'inputs_digest', 'model', name='uq_serving_dicom_studies_submission')
    )
    op.create_index(op.f('ix_serving_dicom_studies_job_id'), 'serving_dicom_studies', ['job_id'], unique=False)
    op.create_index('ix_serving_dicom_studies_study_key', 'serving_dicom_studies', ['study_key', 'created_at'],
                    unique=False)


def downgrade() -> None:
    op.drop_index('ix_serving_dicom_studies_study_key', table_name='serving_dicom_studies')
    op.drop_index(op.f('ix_serving_dicom_studies_job_id'), table_name='serving_dicom_studies')
    op.drop_table('serving_dicom_studies')
