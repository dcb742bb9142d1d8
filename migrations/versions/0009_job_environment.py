"""jobs keep the reproducibility record of their last attempt (versions, device, determinism, worker)

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 13:00:00
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Null for jobs claimed before: nothing recorded what trained them.
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('environment', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'),
                                      nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('environment')
