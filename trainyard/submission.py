"""Submitting a job: validated spec -> job row committed -> job id enqueued, in one place.

The jobs API submits one job per request and the sweep controller submits trials; both go through
`submit`, so whatever a submission does to a job (its row, its message) is decided here once. No Flask:
workers submit trials too.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import bindparam, event, insert, inspect, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from trainyard import lifecycle
from trainyard.db import Database
from trainyard.db.models import Job, JobLabel, new_id, utcnow
from trainyard.labels import with_labels
from trainyard.resources import resource_class

logger = logging.getLogger(__name__)

# Puts a job id on the queue: a process's `trainyard.queue.JobSender` (the one way a job's message is sent).
Send = Callable[[str], None]


def new_job(tenant_id: str, spec: dict[str, Any], **fields: Any) -> Job:
    """The row of a queued job for a normalised spec, with its labels' rows; `fields` sets other columns
    (idempotency, sweep)."""
    job = lifecycle.queued_job(id=new_id("job"), tenant_id=tenant_id, name=spec.get("name"), spec=spec,
                               epochs=spec["training"]["epochs"], created_at=utcnow(),
                               resource_class=resource_class(spec["resources"]["gpus"]), **fields)
    return with_labels(job, spec.get("labels") or {})


def enqueue(db: Database, send: Send, job_id: str, *, raise_errors: bool = False) -> bool:
    """Send a queued job's message, then mark it sent (the outbox marker); False when the broker refused it.

    Every (re-)send of a job whose marker is clear goes through here: a submission, a re-queue after an
    interruption or a lost worker, the outbox sweep. With `raise_errors`, the broker's error propagates (the
    reaper logs its step as failed and tries again on the next heartbeat)."""
    try:
        send(job_id)
    except Exception:  # the broker is down: the workers' outbox sweep enqueues it once it is back
        if raise_errors:
            raise
        logger.exception("could not enqueue job %s; the outbox sweep will retry", job_id)
        return False
    # One statement in autocommit: one round trip instead of BEGIN, UPDATE, COMMIT.
    db.run(_MARK_SENT, {"job_id": job_id, "now": utcnow()})
    return True


# The outbox marker: set once, on a job still queued (a cancelled job's late send leaves it alone).
_MARK_SENT = (update(Job).where(Job.id == bindparam("job_id"), Job.status == "queued", Job.enqueued_at.is_(None))
              .values(enqueued_at=bindparam("now")))


def submit(db: Database, send: Send, job: Job, *, session: Session | None = None,
           after_insert: Callable[[Session], None] | None = None,
           with_rows: Sequence[object] = ()) -> tuple[Job, bool]:
    """Commit `job`'s row, then enqueue it: a worker must always find the job it is handed.

    Returns (job, replayed): with an idempotency key already used by the tenant, the earlier job and True
    (nothing is enqueued again; the caller checks the request matches). With `session`, the row joins
    that open transaction (say, under a sweep's row lock) and is enqueued once the caller commits it.
    `after_insert` runs in the inserting transaction once the rows are written, before the commit (the
    per-tenant quota, which counts the job itself); `with_rows` (rows that point to the job, such as its
    webhook) are inserted in the same transaction.
    """
    if session is not None:
        _insert(session, job, with_rows, after_insert)
        event.listen(session, "after_commit", lambda _s: enqueue(db, send, job.id), once=True)
        return job, False
    try:
        with db.session() as s:
            _insert(s, job, with_rows, after_insert)
    except IntegrityError:
        # Two requests raced on the same idempotency key (unique per tenant): the other one's job wins.
        if job.idempotency_key is None:
            raise
        with db.session() as s:
            existing = s.execute(select(Job).where(Job.tenant_id == job.tenant_id,
                                                   Job.idempotency_key == job.idempotency_key)).scalar_one_or_none()
        if existing is None:
            raise
        return existing, True
    enqueue(db, send, job.id)
    return job, False


def _insert(session: Session, job: Job, with_rows: Sequence[object],
           after_insert: Callable[[Session], None] | None) -> None:
    """The job's row, its labels' rows and `with_rows` as Core INSERTs on the session's transaction, without
    the ORM's unit of work (a third of a submission's CPU was its flush). The objects stay transient, each
    carrying the values written, column defaults included, as a flush would have left them; later statements
    of the transaction see the rows."""
    conn = session.connection()
    conn.execute(_INSERT_JOB, _row_values(job))
    labels = [_row_values(row) for row in job.label_rows]
    if labels:
        conn.execute(_INSERT_LABEL, labels)
    for row in with_rows:
        conn.execute(insert(type(row).__table__), _row_values(row))  # type: ignore[attr-defined]
    if after_insert is not None:
        after_insert(session)


_INSERT_JOB, _INSERT_LABEL = insert(Job.__table__), insert(JobLabel.__table__)


def _row_values(obj: Any) -> dict[str, Any]:
    """The column values of a new mapped object by column name; a column it does not set gets its Python
    default, set on the object too (a flush does the same), else NULL."""
    values: dict[str, Any] = {}
    state = obj.__dict__
    for attr in inspect(type(obj)).column_attrs:
        column = attr.columns[0]
        if attr.key in state:
            value = state[attr.key]
        elif column.default is not None and column.default.is_scalar:
            value = column.default.arg
            setattr(obj, attr.key, value)
        elif column.default is not None and column.default.is_callable:
            value = column.default.arg(None)
            setattr(obj, attr.key, value)
        else:
            continue  # NULL, or the server's default
        values[column.name] = value
    return values
