"""resource classes on jobs, artifact location

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 01:30:00
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        # Jobs submitted before resource classes existed stay on the default queue ("trainyard").
        batch_op.add_column(sa.Column('resource_class', sa.String(length=16), nullable=False, server_default='any'))
        batch_op.create_index('ix_jobs_status_class', ['status', 'resource_class'], unique=False)
    with op.batch_alter_table('artifacts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('location', sa.String(length=16), nullable=False, server_default='db'))
    # Artifacts an fsspec store wrote so far were recorded with chunk_size 0: their bytes are not in the database.
    op.execute("UPDATE artifacts SET location = 'object' WHERE chunk_size = 0")


def downgrade() -> None:
    with op.batch_alter_table('artifacts', schema=None) as batch_op:
        batch_op.drop_column('location')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_status_class')
        batch_op.drop_column('resource_class')
