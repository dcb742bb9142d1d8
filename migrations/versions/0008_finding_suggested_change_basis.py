"""findings say what their suggested change is based on

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 11:00:00
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Null for findings recorded before: their basis was not kept.
    with op.batch_alter_table('findings', schema=None) as batch_op:
        batch_op.add_column(sa.Column('suggested_change_basis', sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('findings', schema=None) as batch_op:
        batch_op.drop_column('suggested_change_basis')
