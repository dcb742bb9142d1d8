"""job labels, and the indexes the jobs list filters and sorts on: labels, name substring, best value

`jobs.labels` holds a job's labels for its representation; `job_labels` holds them a row each with the
job's tenant and creation time, so one B-tree finds a tenant's jobs by label in the order they are paged.
On Postgres the name filter (a case-insensitive substring) uses trigrams: pg_trgm, a contrib extension
that is trusted since Postgres 13 (a database owner may create it; RDS, Cloud SQL and Azure ship it).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 14:00:00
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == 'postgresql'
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        # Null for jobs from before labels: they have none.
        batch_op.add_column(sa.Column('labels', sa.JSON().with_variant(postgresql.JSONB(), 'postgresql'),
                                      nullable=True))
    op.create_table(
        'job_labels',
        sa.Column('job_id', sa.String(length=40), nullable=False),
        sa.Column('key', sa.String(length=63), nullable=False),
        sa.Column('value', sa.String(length=256), nullable=False),
        sa.Column('tenant_id', sa.String(length=40), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('job_id', 'key'),
    )
    op.create_index('ix_job_labels_tenant_key_value_created', 'job_labels',
                    ['tenant_id', 'key', 'value', 'created_at', 'job_id'])
    op.create_index('ix_job_labels_tenant_key_created', 'job_labels', ['tenant_id', 'key', 'created_at', 'job_id'])
    op.create_index('ix_jobs_tenant_best', 'jobs', ['tenant_id', 'best_value', 'id'])
    if postgres:
        op.execute('CREATE EXTENSION IF NOT EXISTS pg_trgm')
    op.create_index('ix_jobs_name_trgm', 'jobs', ['name'], postgresql_using='gin',
                    postgresql_ops={'name': 'gin_trgm_ops'})


def downgrade() -> None:
    op.drop_index('ix_jobs_name_trgm', table_name='jobs')
    op.drop_index('ix_jobs_tenant_best', table_name='jobs')
    op.drop_table('job_labels')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('labels')
