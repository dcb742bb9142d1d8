"""sweeps: a search over job specs whose trials are jobs

Revision ID: 0006
Revises: 0002
Create Date: 2026-11-22 01:20:00
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0006'
down_revision = '0002'
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')


def upgrade() -> None:
    op.create_table('sweeps',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('tenant_id', sa.String(length=40), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('base', JSON, nullable=False),
    sa.Column('config', JSON, nullable=False),
    sa.Column('plan', JSON, nullable=False),
    sa.Column('trials_submitted', sa.Integer(), nullable=False),
    sa.Column('error_code', sa.String(length=64), nullable=True),
    sa.Column('error_message', sa.Text(), nullable=True),
    sa.Column('idempotency_key', sa.String(length=200), nullable=True),
    sa.Column('request_sha256', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['tenant_id'], ['tenants.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('tenant_id', 'idempotency_key', name='uq_sweeps_tenant_idempotency_key')
    )
    op.create_index('ix_sweeps_status', 'sweeps', ['status'], unique=False)
    op.create_index('ix_sweeps_tenant_created', 'sweeps', ['tenant_id', 'created_at', 'id'], unique=False)
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sweep_id', sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column('trial_index', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('trial_params', JSON, nullable=True))
        batch_op.create_unique_constraint('uq_jobs_sweep_trial', ['sweep_id', 'trial_index'])
        batch_op.create_foreign_key('fk_jobs_sweep_id_sweeps', 'sweeps', ['sweep_id'], ['id'], ondelete='SET NULL')


def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_constraint('fk_jobs_sweep_id_sweeps', type_='foreignkey')
        batch_op.drop_constraint('uq_jobs_sweep_trial', type_='unique')
        batch_op.drop_column('trial_params')
        batch_op.drop_column('trial_index')
        batch_op.drop_column('sweep_id')
    op.drop_index('ix_sweeps_tenant_created', table_name='sweeps')
    op.drop_index('ix_sweeps_status', table_name='sweeps')
    op.drop_table('sweeps')
