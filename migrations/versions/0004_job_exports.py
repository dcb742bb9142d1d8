"""job exports: the SavedModel of a job's best checkpoint, made by the worker

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22 01:20:00
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('job_exports',
    sa.Column('job_id', sa.String(length=40), nullable=False),
    sa.Column('format', sa.String(length=16), nullable=False),
    sa.Column('epoch', sa.Integer(), nullable=False),
    sa.Column('artifact_key', sa.String(length=200), nullable=False),
    sa.Column('size_bytes', sa.BigInteger(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('job_id', 'format')
    )


def downgrade() -> None:
    op.drop_table('job_exports')
