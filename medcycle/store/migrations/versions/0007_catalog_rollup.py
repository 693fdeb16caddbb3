"""catalog rollup: series counts by state, rollup cells and reach, kept by triggers

The summary reads a few hundred rollup rows instead of aggregating series or instances; see
``medcycle.catalog.rollup`` for what the tables hold and how the triggers keep them. Existing catalogs
are backfilled (``rollup.rebuild``) before the triggers are installed. ``ix_instances_series_state``
gains the instance uid (pages of series-level queries read only the index).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 14:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from medcycle.catalog import rollup

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

COUNTS = (("ok_instances", sa.Integer()), ("ok_bytes", sa.BigInteger()), ("quarantined_instances", sa.Integer()),
          ("quarantined_bytes", sa.BigInteger()))


def upgrade() -> None:
    # Plain ALTER TABLE (no batch copy of the series table on SQLite: instances reference it).
    for name, kind in COUNTS:
        op.add_column('series', sa.Column(name, kind, server_default=sa.text('0'), nullable=False))
    op.create_table(
        'catalog_rollup_cells',
        sa.Column('cell_key', sa.String(length=512), nullable=False),
        sa.Column('source_id', sa.String(length=32), nullable=False),
        sa.Column('modality', sa.String(length=16), nullable=True),
        sa.Column('body_part', sa.String(length=64), nullable=True),
        sa.Column('manufacturer', sa.String(length=128), nullable=True),
        sa.Column('year', sa.Integer(), nullable=True),
        sa.Column('series', sa.Integer(), nullable=False),
        sa.Column('instances', sa.BigInteger(), nullable=False),
        sa.Column('bytes', sa.BigInteger(), nullable=False),
        sa.Column('quarantined', sa.BigInteger(), nullable=False),
        sa.Column('quarantined_bytes', sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint('cell_key', name=op.f('pk_catalog_rollup_cells')),
    )
    op.create_table(
        'catalog_rollup_reach',
        sa.Column('breakdown', sa.String(length=16), nullable=False),
        sa.Column('gkey', sa.String(length=512), nullable=False),
        sa.Column('source_id', sa.String(length=32), nullable=True),
        sa.Column('modality', sa.String(length=16), nullable=True),
        sa.Column('body_part', sa.String(length=64), nullable=True),
        sa.Column('manufacturer', sa.String(length=128), nullable=True),
        sa.Column('year', sa.Integer(), nullable=True),
        sa.Column('patients', sa.Integer(), nullable=False),
        sa.Column('studies', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('breakdown', 'gkey', name=op.f('pk_catalog_rollup_reach')),
    )
    # The instance uid joins the series index, so pages of series-level filters need no table look-ups.
    op.drop_index('ix_instances_series_state', table_name='instances')
    op.create_index('ix_instances_series_state', 'instances', ['series_uid', 'state', 'uid'], unique=False)
    bind = op.get_bind()
    rollup.rebuild(bind)
    rollup.install(bind)


def downgrade() -> None:
    rollup.uninstall(op.get_bind())
    op.drop_index('ix_instances_series_state', table_name='instances')
    op.create_index('ix_instances_series_state', 'instances', ['series_uid', 'state'], unique=False)
    op.drop_table('catalog_rollup_reach')
    op.drop_table('catalog_rollup_cells')
    for name, _ in reversed(COUNTS):
        op.drop_column('series', name)  # SQLite >= 3.35 drops a column in place
