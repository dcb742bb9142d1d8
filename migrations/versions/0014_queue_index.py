"""the queue's own index: queued jobs by resource class, in the order their messages were sent

A job's queue position counts the queued jobs of its class sent before it (service/api/representations.py,
`queue_positions`). This partial index holds only queued jobs, in that order, so the count reads the queue
from its head to the job and nothing else: no sort, and no entry for the jobs that ended long ago.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06 16:00:00
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa

revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None

QUEUED = sa.text("status = 'queued'")


def upgrade() -> None:
    op.create_index('ix_jobs_queue', 'jobs', ['resource_class', sa.text('coalesce(enqueued_at, created_at)'), 'id'],
                    unique=False, postgresql_where=QUEUED, sqlite_where=QUEUED)


def downgrade() -> None:
    op.drop_index('ix_jobs_queue', table_name='jobs')
