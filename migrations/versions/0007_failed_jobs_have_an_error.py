"""failed jobs have an error: a failed job always carries an error code and a message

Postgres gets a CHECK constraint; SQLite, which cannot add one to an existing table without rebuilding it
(and the rebuild would drop the jobs table's event triggers and cascade its foreign keys), gets two
triggers that refuse the same rows. Jobs that failed before codes were always written are backfilled first.

Revision ID: 0008
Revises: 0005
Create Date: 2026-12-06 06:00:00
"""
from __future__ import annotations

from alembic import op

revision = '0008'
down_revision = '0005'
branch_labels = None
depends_on = None

NAME = 'ck_jobs_failed_has_error'
CONDITION = "status <> 'failed' OR (error_code IS NOT NULL AND error_message IS NOT NULL)"
SQLITE_TRIGGERS = [
    f"""
    CREATE TRIGGER jobs_failed_has_error_{event} BEFORE {event.upper()} ON jobs
    WHEN NEW.status = 'failed' AND (NEW.error_code IS NULL OR NEW.error_message IS NULL)
    BEGIN SELECT RAISE(ABORT, 'CHECK constraint failed: {NAME}'); END
    """
    for event in ('insert', 'update')
]


def upgrade() -> None:
    # Before codes were always written, an error in the trainer left error_code null (stop_reason 'error');
    # the job's logs hold the exception, so the message sends the reader there.
    op.execute("""
        UPDATE jobs SET error_code = CASE WHEN stop_reason IN ('nan_loss', 'no_gradients') THEN stop_reason
                                          ELSE 'training_error' END
        WHERE status = 'failed' AND error_code IS NULL
    """)
    op.execute("""
        UPDATE jobs SET error_message = 'The job failed (stop reason ' || COALESCE(stop_reason, 'unknown')
                                        || ') before its cause was recorded here; its logs name it.'
        WHERE status = 'failed' AND error_message IS NULL
    """)
    if op.get_bind().dialect.name == 'postgresql':
        op.create_check_constraint(NAME, 'jobs', CONDITION)
    else:
        for statement in SQLITE_TRIGGERS:
            op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.drop_constraint(NAME, 'jobs', type_='check')
    else:
        for event in ('insert', 'update'):
            op.execute(f'DROP TRIGGER IF EXISTS jobs_failed_has_error_{event}')
