"""Job leases: how long a claim lasts, the heartbeat's renewal, and whether an attempt ended its own job.

A delivery claims the job (`trainyard.lifecycle.claim`: status running, `attempts` + 1, `worker_id`,
`lease_expires_at`); the worker's heartbeat thread renews the lease every heartbeat; the reaper
(`workers.reaper`) re-queues a job whose lease expired. Each renewal and each final write is fenced on
(worker_id, attempts) (`trainyard.lifecycle.fenced`), so a worker that lost its lease (it stalled, the reaper
gave the job to another worker) learns it at the next heartbeat, stops at the next batch and writes no final
state.

The broker's own redelivery is not relied on: its visibility timeout is a week (trainyard/queue.py), so a
long job is never redelivered while it trains; a dead worker's job comes back through the reaper within
about three heartbeats instead.
"""
from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from trainyard.db import Database
from trainyard.db.models import FINAL_STATUSES, Job, utcnow
from trainyard.lifecycle import fenced

# A lease outlives this many missed heartbeats.
LEASE_HEARTBEATS = 3


def lease_seconds(heartbeat_seconds: float) -> float:
    return LEASE_HEARTBEATS * heartbeat_seconds


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
