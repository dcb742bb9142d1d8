"""job forks: a job's parent, its patch and starting weights; findings resolved by a fork

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 13:00:00
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')


def upgrade() -> None:
    # Every column is null for jobs submitted before: they are nobody's fork.
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('parent_id', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('parent_from', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('parent_patch', JSON, nullable=True))
        batch_op.add_column(sa.Column('parent_findings', JSON, nullable=True))
        batch_op.add_column(sa.Column('initial_weights_key', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('initial_weights_epoch', sa.Integer(), nullable=True))
        batch_op.create_index('ix_jobs_parent', ['parent_id', 'created_at'], unique=False)
    with op.batch_alter_table('findings', schema=None) as batch_op:
        batch_op.add_column(sa.Column('resolved_by_job_id', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('resolved', sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('findings', schema=None) as batch_op:
        batch_op.drop_column('resolved')
        batch_op.drop_column('resolved_by_job_id')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_parent')
        batch_op.drop_column('initial_weights_epoch')
        batch_op.drop_column('initial_weights_key')
        batch_op.drop_column('parent_findings')
        batch_op.drop_column('parent_patch')
        batch_op.drop_column('parent_from')
        batch_op.drop_column('parent_id')
