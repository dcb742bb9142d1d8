"""Tables behind live events, per-job logs and webhooks.

`job_events` is an append-only log of what happened to a job (a status change, an epoch's metrics row
written, a finding raised or changed), one row per change with a sequence number that only grows. It is
filled by database triggers (migrations/versions/0005_live_events_logs_webhooks.py) in the same
transaction as the change itself, so every writer (the API, a worker, the reaper) is covered without
remembering to, a resumed event stream replays exactly what was missed, and the webhook outbox reads
the same log. On Postgres the trigger also sends `NOTIFY trainyard_events, '<job id>'` at commit, which
wakes the API's event streams.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, DateTime, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from trainyard.db.models import Base, JsonType, utcnow

# SQLite only auto-increments an INTEGER PRIMARY KEY; Postgres gets a 64-bit identity.
Seq = BigInteger().with_variant(Integer(), "sqlite")

EVENT_KINDS = ("status", "epoch", "finding")
NOTIFY_CHANNEL = "trainyard_events"


class JobEvent(Base):
    __tablename__ = "job_events"

    seq: Mapped[int] = mapped_column(Seq, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    # status events: the new status and stop reason; epoch events: the epoch; finding events: its row id.
    status: Mapped[str | None] = mapped_column(String(16))
    stop_reason: Mapped[str | None] = mapped_column(String(32))
    epoch: Mapped[int | None] = mapped_column(Integer)
    finding_id: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (
        Index("ix_job_events_job_seq", "job_id", "seq"),
        Index("ix_job_events_kind_created", "kind", "created_at"),
    )


class JobLog(Base):
    """A job-scoped log line written by the worker that ran it (served by GET /v1/jobs/{id}/logs)."""

    __tablename__ = "job_logs"

    seq: Mapped[int] = mapped_column(Seq, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    level: Mapped[str] = mapped_column(String(16))
    logger: Mapped[str] = mapped_column(String(200))
    message: Mapped[str] = mapped_column(Text)
    worker_id: Mapped[str | None] = mapped_column(String(200))

    __table_args__ = (Index("ix_job_logs_job_seq", "job_id", "seq"),)


class JobWebhook(Base):
    """Where a job's events go, and the secret they are signed with (never returned by the API)."""

    __tablename__ = "job_webhooks"

    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[list[Any]] = mapped_column(JsonType)
    # "epoch" in events, as a column the outbox query can filter on.
    epoch_events: Mapped[bool] = mapped_column(Boolean, default=False)
    secret: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class WebhookDelivery(Base):
    """One event to deliver to one job's webhook, with its attempts (the outbox)."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    event_seq: Mapped[int] = mapped_column(ForeignKey("job_events.seq", ondelete="CASCADE"), unique=True)
    event: Mapped[str] = mapped_column(String(16))
    payload: Mapped[dict[str, Any]] = mapped_column(JsonType)
    # pending -> delivered | failed (after the last allowed attempt)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (Index("ix_webhook_deliveries_state_next", "state", "next_attempt_at"),)
