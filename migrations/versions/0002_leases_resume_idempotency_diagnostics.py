"""leases, resume, idempotency, diagnostics

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 23:38:44.821377
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('epoch_diagnostics',
    sa.Column('job_id', sa.String(length=40), nullable=False),
    sa.Column('epoch', sa.Integer(), nullable=False),
    sa.Column('learning_rate', sa.Float(), nullable=True),
    sa.Column('loss', sa.Float(), nullable=True),
    sa.Column('variables', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('job_id', 'epoch')
    )
    op.create_table('findings',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('job_id', sa.String(length=40), nullable=False),
    sa.Column('code', sa.String(length=64), nullable=False),
    sa.Column('severity', sa.String(length=16), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('evidence', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('layer', sa.String(length=200), nullable=False),
    sa.Column('epoch', sa.Integer(), nullable=True),
    sa.Column('suggested_change', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('job_id', 'code', 'layer', name='uq_findings_job_code_layer')
    )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('max_attempts', sa.Integer(), nullable=False, server_default='3'))
        batch_op.add_column(sa.Column('interruptions', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('idempotency_key', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('request_sha256', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('backup_key', sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column('backup_epoch', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('resume_state', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True))
        batch_op.create_index('ix_jobs_status_lease', ['status', 'lease_expires_at'], unique=False)
        batch_op.create_unique_constraint('uq_jobs_tenant_idempotency_key', ['tenant_id', 'idempotency_key'])



def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_constraint('uq_jobs_tenant_idempotency_key', type_='unique')
        batch_op.drop_index('ix_jobs_status_lease')
        batch_op.drop_column('resume_state')
        batch_op.drop_column('backup_epoch')
        batch_op.drop_column('backup_key')
        batch_op.drop_column('request_sha256')
        batch_op.drop_column('idempotency_key')
        batch_op.drop_column('interruptions')
        batch_op.drop_column('max_attempts')
        batch_op.drop_column('heartbeat_at')
        batch_op.drop_column('lease_expires_at')

    op.drop_table('findings')
    op.drop_table('epoch_diagnostics')
