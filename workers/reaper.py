"""The reaper: every worker runs it on each heartbeat, so wherever a worker runs, nothing is lost.

1. Expired leases: a running job whose worker stopped renewing its lease (killed, machine gone) goes back
   to queued and is enqueued again; a cancelled one ends cancelled; one whose attempts are used up fails.
2. Outbox: a queued job the broker never accepted (down at submit time, or a re-queue whose send failed)
   is enqueued.
3. Lost messages: with Redis, a queued job whose message is neither waiting in the queue nor held by a
   worker (Redis flushed, or restarted without persistence) is enqueued again.

Several workers reap concurrently: each change is a conditional UPDATE or takes row locks skipping locked
rows, so one of them wins and the others skip; a duplicate message that still slips through is dropped by
the claim's lease check (`trainyard.lifecycle.claim`). Status changes are made by trainyard/lifecycle.py.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import select, update

from trainyard.db import Database, db_time
from trainyard.db.models import Job, utcnow
from trainyard.lifecycle import expire_leases
from trainyard.submission import enqueue

logger = logging.getLogger(__name__)

# A queued job the broker never took is re-sent after this long (the API marks it right after sending).
OUTBOX_GRACE_SECONDS = 2.0
# A message sent this recently may be on its way (popped by a worker that has not claimed yet).
LOST_MESSAGE_GRACE_SECONDS = 5.0


def reap_expired_leases(db: Database, send: Callable[[str], None]) -> list[str]:
    """Re-queue (or end) running jobs whose lease expired (`trainyard.lifecycle.expire_leases`), and send
    the re-queued ones again; return their ids."""
    requeued = expire_leases(db)
    for job_id in requeued:
        enqueue(db, send, job_id, raise_errors=True)
    return requeued


def send_unsent(db: Database, send: Callable[[str], None]) -> list[str]:
    """Enqueue queued jobs the broker never accepted (it was down when they were submitted)."""
    cutoff = db_time(db, utcnow() - timedelta(seconds=OUTBOX_GRACE_SECONDS))
    with db.session() as s:
        ids = list(s.execute(
            select(Job.id).where(Job.status == "queued", Job.enqueued_at.is_(None), Job.created_at < cutoff)
            .limit(100)
        ).scalars())
    for job_id in ids:
        if enqueue(db, send, job_id, raise_errors=True):
            logger.info("re-sent job %s that the broker had not accepted", job_id, extra={"job_id": job_id})
    return ids


def resend_lost(db: Database, send: Callable[[str], None], in_broker: Callable[[list[str]], set[str]]) -> list[str]:
    """Enqueue again queued jobs whose message the broker no longer has."""
    cutoff = db_time(db, utcnow() - timedelta(seconds=LOST_MESSAGE_GRACE_SECONDS))
    with db.session() as s:
        rows = list(s.execute(
            select(Job.id, Job.enqueued_at).where(Job.status == "queued", Job.enqueued_at < cutoff)
            .order_by(Job.created_at).limit(500)
        ))
    if not rows:
        return []
    present = in_broker([job_id for job_id, _ in rows])
    resent: list[str] = []
    for job_id, enqueued_at in rows:
        if job_id in present:
            continue
        with db.session() as s:
            # Only the reaper that moves the marker first re-sends.
            won = s.execute(
                update(Job).where(Job.id == job_id, Job.status == "queued", Job.enqueued_at == enqueued_at)
                .values(enqueued_at=utcnow())
            ).rowcount == 1
        if won:
            send(job_id)
            resent.append(job_id)
            logger.warning("job %s was queued but its message is gone from the broker; re-sent", job_id,
                           extra={"job_id": job_id})
    return resent


def redis_messages_for(broker_url: str, queue: str,
                       unacked_grace: float | None = None) -> Callable[[list[str]], set[str]]:
    """For a Redis broker: which of the given job ids have a message waiting or delivered-unacked.

    With `unacked_grace`, a delivered message counts only while it is younger than that: a worker that
    died between taking a message and claiming its job leaves it unacknowledged for the broker's
    visibility timeout (a week), and the job, still queued, would wait all that time.
    """
    import time

    import redis

    client = redis.Redis.from_url(broker_url, socket_timeout=5)

    def present(job_ids: list[str]) -> set[str]:
        blobs: list[bytes] = []
        # kombu keeps a queue per priority step ("trainyard", "trainyard\x06\x163", ...), one per resource
        # class ("trainyard.gpu-2", ...), and the messages delivered to a worker but not acknowledged yet
        # in the "unacked" hash (delivery time in the "unacked_index" sorted set).
        for key in client.scan_iter(match=f"{queue}*", count=1000):
            if client.type(key) == b"list":
                blobs.extend(client.lrange(key, 0, -1))
        if unacked_grace is None:
            blobs.extend(client.hvals("unacked"))
        else:
            tags = client.zrangebyscore("unacked_index", time.time() - unacked_grace, "+inf")
            if tags:
                blobs.extend(blob for blob in client.hmget("unacked", tags) if blob is not None)
        text = b"\n".join(blobs)
        return {job_id for job_id in job_ids if job_id.encode() in text}

    return present
