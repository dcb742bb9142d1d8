"""Job leases in Postgres: who may train a job right now, and the fencing of everything they write.

A delivery claims the job (status running, `attempts` + 1, `worker_id`, `lease_expires_at`); the worker's
heartbeat thread renews the lease every heartbeat; the reaper (`workers.reaper`) re-queues a job whose
lease expired. Each renewal and each final write is fenced on (worker_id, attempts), so a worker that lost
its lease (it stalled, the reaper gave the job to another worker) learns it at the next heartbeat, stops
at the next batch and writes no final state.

The broker's own redelivery is not relied on: its visibility timeout is a week (trainyard/queue.py), so a
long job is never redelivered while it trains; a dead worker's job comes back through the reaper within
about three heartbeats instead.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import delete, func, select, update

from trainyard.db import Database
from trainyard.db.models import FINAL_STATUSES, Checkpoint, EpochDiagnostics, EpochMetrics, Job, Tenant, utcnow
from trainyard.job_errors import JobError, failure

logger = logging.getLogger(__name__)

# A lease outlives this many missed heartbeats.
LEASE_HEARTBEATS = 3


def lease_seconds(heartbeat_seconds: float) -> float:
    return LEASE_HEARTBEATS * heartbeat_seconds


def aware(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes (stored as UTC); Postgres aware ones.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


def db_time(db: Database, value: datetime) -> datetime:
    """A UTC datetime as the database compares it (naive on SQLite)."""
    return value.replace(tzinfo=None) if db.url.startswith("sqlite") else value


WORKER_LOST_MESSAGE = (
    "The job's worker stopped without finishing it {attempts} times (killed, out of memory, or its "
    "machine went away); it is not retried again. Lower the memory the model needs (batch size, layer "
    "sizes) or look at the worker's logs."
)


@dataclass
class Claim:
    job_id: str
    attempt: int
    spec: dict[str, Any]
    backup_key: str | None
    backup_epoch: int | None
    resume_state: dict[str, Any] | None
    best_epoch: int | None
    best_value: float | None
    best_checkpoint_key: str | None


def fail_worker_lost(job: Job) -> None:
    for key, value in failure(JobError.WORKER_LOST,
                              WORKER_LOST_MESSAGE.format(attempts=job.attempts - job.interruptions)).items():
        setattr(job, key, value)
    job.stop_reason = "error"
    job.finished_at = utcnow()
    job.lease_expires_at = None


def _tenant_at_running_limit(db: Database, s: Any, job: Job, max_running: int, now: datetime) -> bool:
    # The tenant's row is locked so two workers cannot both start the tenant's last allowed job.
    s.execute(select(Tenant.id).where(Tenant.id == job.tenant_id).with_for_update())
    running = s.execute(
        select(func.count()).select_from(Job).where(
            Job.tenant_id == job.tenant_id, Job.id != job.id, Job.status == "running",
            Job.lease_expires_at > db_time(db, now))
    ).scalar_one()
    return running >= max_running


def claim(db: Database, job_id: str, worker_id: str, lease_for: float,
          max_running_per_tenant: int | None = None) -> Claim | None:
    """Take the job's lease and move it to running; None when this delivery must not train.

    With `max_running_per_tenant`, a job whose tenant already trains that many jobs is deferred: it stays
    queued with its outbox marker cleared, so the reaper sends it again a heartbeat later, behind the
    other tenants' messages.
    """
    now = utcnow()
    with db.session() as s:
        job = s.get(Job, job_id, with_for_update=True)
        if job is None:
            logger.warning("job %s does not exist (deleted?); dropping its message", job_id)
            return None
        if job.status in FINAL_STATUSES:
            logger.info("job %s is already %s; nothing to do", job_id, job.status)
            return None
        lease = aware(job.lease_expires_at)
        if job.status == "running" and lease is not None and lease > now and job.worker_id != worker_id:
            logger.info("job %s is running on %s (lease until %s); dropping this delivery",
                        job_id, job.worker_id, lease.isoformat())
            return None
        if job.cancel_requested:
            job.status, job.stop_reason, job.finished_at = "cancelled", "cancelled", now
            job.lease_expires_at = None
            return None
        if job.attempts - job.interruptions >= job.max_attempts:
            fail_worker_lost(job)
            logger.warning("job %s: %d attempts died; failing it", job_id, job.attempts - job.interruptions)
            return None
        if (max_running_per_tenant is not None and job.status == "queued"
                and _tenant_at_running_limit(db, s, job, max_running_per_tenant, now)):
            job.enqueued_at = None
            logger.info("job %s: its tenant already runs %d jobs; deferred", job_id, max_running_per_tenant)
            return None
        job.status = "running"
        job.started_at = job.started_at or now
        job.attempts += 1
        job.worker_id = worker_id
        job.heartbeat_at = now
        job.lease_expires_at = now + timedelta(seconds=lease_for)
        if job.backup_key is not None and job.backup_epoch is not None:
            # The new attempt re-runs every epoch after the backup: rows of the lost attempt past it go,
            # so the metrics and diagnostics stay one row per epoch of the run that counts.
            for table in (EpochMetrics, EpochDiagnostics):
                s.execute(delete(table).where(table.job_id == job_id, table.epoch > job.backup_epoch))
            job.epoch = job.backup_epoch
        best_key = s.execute(
            select(Checkpoint.artifact_key).where(Checkpoint.job_id == job_id, Checkpoint.is_best.is_(True))
        ).scalar_one_or_none()
        return Claim(job_id=job_id, attempt=job.attempts, spec=job.spec, backup_key=job.backup_key,
                     backup_epoch=job.backup_epoch, resume_state=job.resume_state, best_epoch=job.best_epoch,
                     best_value=job.best_value, best_checkpoint_key=best_key)


def fenced(job_id: str, worker_id: str, attempt: int, *, running: bool = True) -> Any:
    """The WHERE clause only the current lease holder's writes satisfy; `running=False` for a correction
    right after the holder recorded the job's end (no other attempt has claimed it since)."""
    clause = (Job.id == job_id) & (Job.worker_id == worker_id) & (Job.attempts == attempt)
    return clause & (Job.status == "running") if running else clause


def renew(db: Database, job_id: str, worker_id: str, attempt: int, lease_for: float) -> bool:
    """Extend the lease; False when this worker no longer holds it."""
    now = utcnow()
    with db.session() as s:
        result = s.execute(
            update(Job).where(fenced(job_id, worker_id, attempt))
            .values(heartbeat_at=now, lease_expires_at=now + timedelta(seconds=lease_for))
        )
        return result.rowcount == 1


def ended_by(db: Database, job_id: str, worker_id: str, attempt: int) -> bool:
    """Whether this attempt itself recorded the job's end (a renewal that finds it final is not a lost lease)."""
    with db.session() as s:
        return s.execute(select(Job.id).where(fenced(job_id, worker_id, attempt, running=False),
                                              Job.status.in_(FINAL_STATUSES))).first() is not None


def release_for_requeue(db: Database, job_id: str, worker_id: str, attempt: int) -> bool:
    """A graceful stop: back to queued, counted as an interruption rather than a failed attempt."""
    with db.session() as s:
        result = s.execute(
            update(Job).where(fenced(job_id, worker_id, attempt))
            .values(status="queued", interruptions=Job.interruptions + 1, worker_id=None,
                    lease_expires_at=None, enqueued_at=None)
        )
        return result.rowcount == 1


def end_cancelled(db: Database, job_id: str, worker_id: str, attempt: int) -> bool:
    """A cancelled attempt that stopped before the trainer could record its end (interrupted in a phase, or
    stuck in one): the job ends cancelled. Its best checkpoint, if it stored one, stays the job's best."""
    with db.session() as s:
        result = s.execute(
            update(Job).where(fenced(job_id, worker_id, attempt))
            .values(status="cancelled", stop_reason="cancelled", finished_at=utcnow(), lease_expires_at=None)
        )
        return result.rowcount == 1
