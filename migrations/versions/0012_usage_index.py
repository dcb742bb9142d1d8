"""the index GET /v1/usage reads a tenant's training seconds from: (tenant_id, finished_at, started_at)

Finished jobs' wall-clock time is summed from this index alone (an index-only scan on Postgres), the whole
history or the current month's range of `finished_at` (trainyard/usage.py).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 16:00:00
"""
from __future__ import annotations

from alembic import op

revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_jobs_tenant_finished', 'jobs', ['tenant_id', 'finished_at', 'started_at'])


def downgrade() -> None:
    op.drop_index('ix_jobs_tenant_finished', table_name='jobs')
