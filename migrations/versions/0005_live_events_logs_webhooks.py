"""live events, per-job logs, webhooks

Revision ID: 0004
Revises: 0007
Create Date: 2026-11-22 01:20:00

`job_events` is filled by triggers, in the transaction that makes the change: a status change of a job
(insert or update of jobs.status), an epoch's metrics row written, a finding raised or changed (severity,
message or suggested change). On Postgres, events of one job take the job's row lock before they get their
sequence number, so within a job sequence order is commit order (a reader that has seen event N never
later finds an event below N), and every event sends NOTIFY trainyard_events with the job id at commit.
SQLite has one writer at a time, which gives the same order.
"""
from __future__ import annotations

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0004'
down_revision = '0007'
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')
SEQ = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')

POSTGRES_TRIGGERS = [
    """
    CREATE FUNCTION trainyard_job_event() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF TG_TABLE_NAME = 'jobs' THEN
        IF TG_OP = 'INSERT' OR NEW.status IS DISTINCT FROM OLD.status THEN
          INSERT INTO job_events (job_id, kind, status, stop_reason, created_at)
          VALUES (NEW.id, 'status', NEW.status, NEW.stop_reason, clock_timestamp());
        END IF;
      ELSIF TG_TABLE_NAME = 'epoch_metrics' THEN
        PERFORM 1 FROM jobs WHERE id = NEW.job_id FOR NO KEY UPDATE;
        INSERT INTO job_events (job_id, kind, epoch, created_at)
        VALUES (NEW.job_id, 'epoch', NEW.epoch, clock_timestamp());
      ELSIF TG_TABLE_NAME = 'findings' THEN
        IF TG_OP = 'INSERT' OR NEW.severity IS DISTINCT FROM OLD.severity
           OR NEW.message IS DISTINCT FROM OLD.message
           OR NEW.suggested_change IS DISTINCT FROM OLD.suggested_change THEN
          PERFORM 1 FROM jobs WHERE id = NEW.job_id FOR NO KEY UPDATE;
          INSERT INTO job_events (job_id, kind, finding_id, created_at)
          VALUES (NEW.job_id, 'finding', NEW.id, clock_timestamp());
        END IF;
      END IF;
      RETURN NULL;
    END $$
    """,
    """
    CREATE FUNCTION trainyard_notify_event() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      PERFORM pg_notify('trainyard_events', NEW.job_id);
      RETURN NULL;
    END $$
    """,
    "CREATE TRIGGER jobs_status_event AFTER INSERT OR UPDATE OF status ON jobs "
    "FOR EACH ROW EXECUTE FUNCTION trainyard_job_event()",
    "CREATE TRIGGER epoch_metrics_event AFTER INSERT OR UPDATE ON epoch_metrics "
    "FOR EACH ROW EXECUTE FUNCTION trainyard_job_event()",
    "CREATE TRIGGER findings_event AFTER INSERT OR UPDATE ON findings "
    "FOR EACH ROW EXECUTE FUNCTION trainyard_job_event()",
    "CREATE TRIGGER job_events_notify AFTER INSERT ON job_events "
    "FOR EACH ROW EXECUTE FUNCTION trainyard_notify_event()",
]

# SQLAlchemy reads SQLite datetimes as 'YYYY-MM-DD HH:MM:SS.ffffff' (UTC).
_NOW = "strftime('%Y-%m-%d %H:%M:%f', 'now') || '000'"
SQLITE_TRIGGERS = [
    f"""
    CREATE TRIGGER jobs_status_insert_event AFTER INSERT ON jobs BEGIN
      INSERT INTO job_events (job_id, kind, status, stop_reason, created_at)
      VALUES (NEW.id, 'status', NEW.status, NEW.stop_reason, {_NOW});
    END
    """,
    f"""
    CREATE TRIGGER jobs_status_update_event AFTER UPDATE OF status ON jobs
    WHEN OLD.status IS NOT NEW.status BEGIN
      INSERT INTO job_events (job_id, kind, status, stop_reason, created_at)
      VALUES (NEW.id, 'status', NEW.status, NEW.stop_reason, {_NOW});
    END
    """,
    f"""
    CREATE TRIGGER epoch_metrics_insert_event AFTER INSERT ON epoch_metrics BEGIN
      INSERT INTO job_events (job_id, kind, epoch, created_at) VALUES (NEW.job_id, 'epoch', NEW.epoch, {_NOW});
    END
    """,
    f"""
    CREATE TRIGGER epoch_metrics_update_event AFTER UPDATE ON epoch_metrics BEGIN
      INSERT INTO job_events (job_id, kind, epoch, created_at) VALUES (NEW.job_id, 'epoch', NEW.epoch, {_NOW});
    END
    """,
    f"""
    CREATE TRIGGER findings_insert_event AFTER INSERT ON findings BEGIN
      INSERT INTO job_events (job_id, kind, finding_id, created_at) VALUES (NEW.job_id, 'finding', NEW.id, {_NOW});
    END
    """,
    f"""
    CREATE TRIGGER findings_update_event AFTER UPDATE ON findings
    WHEN OLD.severity IS NOT NEW.severity OR OLD.message IS NOT NEW.message
         OR OLD.suggested_change IS NOT NEW.suggested_change BEGIN
      INSERT INTO job_events (job_id, kind, finding_id, created_at) VALUES (NEW.job_id, 'finding', NEW.id, {_NOW});
    END
    """,
]


def upgrade() -> None:
    op.create_table('job_events',
    sa.Column('seq', SEQ, autoincrement=True, nullable=False),
    sa.Column('job_id', sa.String(length=40), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=True),
    sa.Column('stop_reason', sa.String(length=32), nullable=True),
    sa.Column('epoch', sa.Integer(), nullable=True),
    sa.Column('finding_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('seq')
    )
    op.create_index('ix_job_events_job_seq', 'job_events', ['job_id', 'seq'], unique=False)
    op.create_index('ix_job_events_kind_created', 'job_events', ['kind', 'created_at'], unique=False)
    op.create_table('job_logs',
    sa.Column('seq', SEQ, autoincrement=True, nullable=False),
    sa.Column('job_id', sa.String(length=40), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('level', sa.String(length=16), nullable=False),
    sa.Column('logger', sa.String(length=200), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.Column('worker_id', sa.String(length=200), nullable=True),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('seq')
    )
    op.create_index('ix_job_logs_job_seq', 'job_logs', ['job_id', 'seq'], unique=False)
    op.create_table('job_webhooks',
    sa.Column('job_id', sa.String(length=40), nullable=False),
    sa.Column('url', sa.Text(), nullable=False),
    sa.Column('events', JSON, nullable=False),
    sa.Column('epoch_events', sa.Boolean(), nullable=False),
    sa.Column('secret', sa.String(length=256), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('job_id')
    )
    op.create_table('webhook_deliveries',
    sa.Column('id', sa.String(length=40), nullable=False),
    sa.Column('job_id', sa.String(length=40), nullable=False),
    sa.Column('event_seq', SEQ, nullable=False),
    sa.Column('event', sa.String(length=16), nullable=False),
    sa.Column('payload', JSON, nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_status_code', sa.Integer(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['event_seq'], ['job_events.seq'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('event_seq')
    )
    op.create_index('ix_webhook_deliveries_state_next', 'webhook_deliveries', ['state', 'next_attempt_at'],
                    unique=False)
    triggers = POSTGRES_TRIGGERS if op.get_bind().dialect.name == 'postgresql' else SQLITE_TRIGGERS
    for statement in triggers:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        for trigger, table in (('jobs_status_event', 'jobs'), ('epoch_metrics_event', 'epoch_metrics'),
                               ('findings_event', 'findings'), ('job_events_notify', 'job_events')):
            op.execute(f'DROP TRIGGER IF EXISTS {trigger} ON {table}')
        op.execute('DROP FUNCTION IF EXISTS trainyard_job_event()')
        op.execute('DROP FUNCTION IF EXISTS trainyard_notify_event()')
    else:
        for trigger in ('jobs_status_insert_event', 'jobs_status_update_event', 'epoch_metrics_insert_event',
                        'epoch_metrics_update_event', 'findings_insert_event', 'findings_update_event'):
            op.execute(f'DROP TRIGGER IF EXISTS {trigger}')
    op.drop_index('ix_webhook_deliveries_state_next', table_name='webhook_deliveries')
    op.drop_table('webhook_deliveries')
    op.drop_table('job_webhooks')
    op.drop_index('ix_job_logs_job_seq', table_name='job_logs')
    op.drop_table('job_logs')
    op.drop_index('ix_job_events_kind_created', table_name='job_events')
    op.drop_index('ix_job_events_job_seq', table_name='job_events')
    op.drop_table('job_events')
