"""Webhook delivery: an outbox read by a background thread of every worker (workers/runtime.py).

1. `enqueue`: every status event (and epoch event, when the job asked for them) of a job with a webhook
   gets one `webhook_deliveries` row. The events come from `job_events`, written by triggers in the same
   transaction as the change itself, so no state change is missed, whoever made it; the row's unique
   event_seq makes concurrent workers insert it once.
2. `deliver_due`: the oldest pending delivery of each job (so a receiver sees a job's events in order)
   whose time has come is claimed with a conditional UPDATE (one worker wins) and POSTed, signed
   (trainyard/webhooks.py). A 2xx ends it; anything else is retried after backoff * 2^(attempts-1) seconds,
   up to `webhook_max_attempts` attempts, then it is marked failed. Each attempt is recorded on the row
   and in the job's logs.

Training never waits for any of this: it runs in its own thread, with a timeout on every request.
"""
from __future__ import annotations

import json
import logging
import threading
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError

from trainyard.db import Database, db_time
from trainyard.db.live import JobEvent, JobWebhook, WebhookDelivery
from trainyard.db.models import EpochMetrics, Job, new_id, utcnow
from trainyard.settings import Settings
from trainyard.timestamps import iso
from trainyard.webhooks import DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, TargetRefused, post, signature

logger = logging.getLogger(__name__)

# Events older than this when first seen (a webhook added to an old job's row by hand) are not sent.
ENQUEUE_WINDOW = timedelta(days=1)
MAX_BACKOFF_SECONDS = 3600.0


def _payload(delivery_id: str, event: JobEvent, job: Job, row: EpochMetrics | None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "job": {
            "id": job.id, "name": job.name, "status": job.status, "stop_reason": job.stop_reason,
            "progress": {"epoch": job.epoch, "epochs": job.epochs},
            "best": {"monitor": job.best_monitor, "value": job.best_value, "epoch": job.best_epoch}
            if job.best_epoch is not None else None,
            "error": {"code": job.error_code, "message": job.error_message} if job.error_code else None,
        },
    }
    if event.kind == "status":
        data.update(status=event.status, stop_reason=event.stop_reason)
    else:
        data["epoch"] = {"epoch": row.epoch, **row.values} if row is not None else {"epoch": event.epoch}
    return {"id": delivery_id, "type": f"job.{event.kind}", "created_at": iso(event.created_at),
            "job_id": job.id, "data": data}


def enqueue(db: Database) -> int:
    """Create the delivery rows of events not yet in the outbox; returns how many."""
    since = db_time(db, utcnow() - ENQUEUE_WINDOW)
    with db.session() as s:
        events = list(s.execute(
            select(JobEvent)
            .join(JobWebhook, JobWebhook.job_id == JobEvent.job_id)
            .outerjoin(WebhookDelivery, WebhookDelivery.event_seq == JobEvent.seq)
            .where(WebhookDelivery.id.is_(None), JobEvent.created_at > since,
                   or_(JobEvent.kind == "status", and_(JobEvent.kind == "epoch", JobWebhook.epoch_events.is_(True))))
            .order_by(JobEvent.seq).limit(200)
        ).scalars())
        if not events:
            return 0
        jobs = {j.id: j for j in s.execute(select(Job).where(Job.id.in_({e.job_id for e in events}))).scalars()}
        rows = {(r.job_id, r.epoch): r for r in s.execute(select(EpochMetrics).where(
            EpochMetrics.job_id.in_({e.job_id for e in events if e.kind == "epoch"}))).scalars()}
        new = []
        for e in events:
            delivery_id = new_id("whd")
            new.append({"id": delivery_id, "job_id": e.job_id, "event_seq": e.seq, "event": e.kind,
                        "payload": _payload(delivery_id, e, jobs[e.job_id], rows.get((e.job_id, e.epoch))),
                        "state": "pending", "attempts": 0, "next_attempt_at": utcnow(), "created_at": utcnow()})
    created = 0
    for row in new:
        try:
            with db.session() as s:
                s.execute(insert(WebhookDelivery), [row])
            created += 1
        except IntegrityError:  # another worker queued it first
            pass
    return created


def deliver_due(db: Database, settings: Settings, limit: int = 20) -> int:
    """Attempt the deliveries whose time has come; returns how many were attempted."""
    now = utcnow()
    with db.session() as s:
        oldest = select(func.min(WebhookDelivery.event_seq)).where(
            WebhookDelivery.state == "pending").group_by(WebhookDelivery.job_id)
        due = list(s.execute(
            select(WebhookDelivery.id, WebhookDelivery.next_attempt_at)
            .where(WebhookDelivery.state == "pending", WebhookDelivery.event_seq.in_(oldest),
                   WebhookDelivery.next_attempt_at <= db_time(db, now))
            .order_by(WebhookDelivery.next_attempt_at).limit(limit)
        ).all())
    attempted = 0
    for delivery_id, next_at in due:
        # Claim: push next_attempt_at past this attempt's timeout; only the worker that moved it sends.
        with db.session() as s:
            won = s.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.id == delivery_id, WebhookDelivery.state == "pending",
                       WebhookDelivery.next_attempt_at == next_at)
                .values(next_attempt_at=utcnow() + timedelta(seconds=2 * settings.webhook_timeout_seconds + 30))
            ).rowcount == 1
        if won:
            attempt(db, settings, delivery_id)
            attempted += 1
    return attempted


def attempt(db: Database, settings: Settings, delivery_id: str) -> bool:
    with db.session() as s:
        d = s.get(WebhookDelivery, delivery_id)
        hook = s.get(JobWebhook, d.job_id) if d is not None else None
    if d is None or hook is None:
        return False
    body = json.dumps(d.payload, separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "trainyard-webhooks/1",
               DELIVERY_HEADER: d.id, EVENT_HEADER: d.event, SIGNATURE_HEADER: signature(hook.secret, body)}
    status_code: int | None = None
    error: str | None = None
    try:
        status_code = post(hook.url, body, headers, timeout=settings.webhook_timeout_seconds,
                           allow_private=settings.webhook_allow_private)
        if not 200 <= status_code < 300:
            error = f"the receiver answered {status_code}"
    except TargetRefused as exc:
        error = f"refused: {exc}"
    except Exception as exc:  # timeouts, refused connections, TLS errors
        error = f"{type(exc).__name__}: {str(exc)[:300]}"
    attempts = d.attempts + 1
    values: dict[str, Any] = {"attempts": attempts, "last_status_code": status_code, "last_error": error}
    extra = {"job_id": d.job_id}
    if error is None:
        values.update(state="delivered", delivered_at=utcnow())
        logger.info("webhook %s (%s) delivered on attempt %d", d.id, d.event, attempts, extra=extra)
    elif attempts >= settings.webhook_max_attempts:
        values.update(state="failed")
        logger.warning("webhook %s (%s) failed for good after %d attempts: %s", d.id, d.event, attempts, error,
                       extra=extra)
    else:
        delay = min(settings.webhook_backoff_seconds * 2 ** (attempts - 1), MAX_BACKOFF_SECONDS)
        values.update(next_attempt_at=utcnow() + timedelta(seconds=delay))
        logger.warning("webhook %s (%s) attempt %d failed (%s); retrying in %.1f s", d.id, d.event, attempts,
                       error, delay, extra=extra)
    with db.session() as s:
        s.execute(update(WebhookDelivery).where(WebhookDelivery.id == d.id).values(**values))
    return error is None


class WebhookSender:
    """The worker's background thread: enqueue and deliver every `webhook_poll_seconds`."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="trainyard-webhooks", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.webhook_poll_seconds):
            try:
                enqueue(self.db)
                deliver_due(self.db, self.settings)
            except Exception:
                logger.warning("webhook delivery round failed; will retry", exc_info=True)
