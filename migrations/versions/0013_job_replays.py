"""job replays: the job a replay trains again, and its reproduction once it ended

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 16:00:00
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Null for every job submitted before: none of them is a replay.
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('replay_of', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('reproduction', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'),
                                      nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('reproduction')
        batch_op.drop_column('replay_of')
