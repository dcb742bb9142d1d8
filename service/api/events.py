"""A job's live events as Server-Sent Events: GET /v1/jobs/{id}/events.

Every event is read from the database (`job_events`, filled by triggers in the transaction of each
change), so a stream that resumes with `Last-Event-ID` gets exactly what it missed. Event ids are the
log's sequence numbers, which within one job grow in commit order:

- a fresh stream (no id, or id 0) starts with `status` (the job now) as id 0, then the newest version of
  every epoch and finding so far, in the order they were written, then follows the log;
- a resumed stream sends the log's events after the id it was given;
- once the job has ended and every event is sent, `end` (id: the last id + 1) closes the stream.

While idle the stream sleeps on the process's EventHub (service/eventhub.py) and costs no queries; it
writes `: keepalive` (and re-reads the log) after `events_keepalive_seconds` of quiet. bin/api serves
the API with gevent workers, so hundreds of open streams are hundreds of parked greenlets, not threads.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Response, current_app, request, stream_with_context
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from service.api.hooks import bearer_token
from service.api.common import MAX_BIGINT, int_arg, load_owned, whole_number
from service.api.representations import finding_resource, job_with_findings, metrics_item, status_event
from service.auth import authenticate_cached
from service.errors import (DATABASE_RETRY_AFTER_SECONDS, DATABASE_UNAVAILABLE, ApiError, ServiceUnavailable,
                            database_unavailable)
from service.eventhub import EventHub, Subscription
from service.services import Services, services
from trainyard.db.live import JobEvent
from trainyard.db.models import FINAL_STATUSES, EpochMetrics, Finding, Job

logger = logging.getLogger(__name__)

bp = Blueprint("events", __name__)

BATCH = 500


# How soon a client whose stream ended because this API process is stopping should reconnect: another
# instance, or this service once restarted, answers it.
RESTART_RETRY_SECONDS = 1


def restarting() -> ServiceUnavailable:
    return ServiceUnavailable("This API process is stopping (a restart or a deploy); reconnect with the last "
                              "event id to go on from where the stream ended.")


def hub() -> EventHub:
    return current_app.extensions["trainyard_events"]


def _last_event_id() -> int:
    header = (request.headers.get("Last-Event-ID") or "").strip()
    if header:  # an empty one is what EventSource never sends: a fresh stream
        return whole_number(header, "header.Last-Event-ID", minimum=0, maximum=MAX_BIGINT)
    return int_arg("last_event_id", 0, minimum=0, maximum=MAX_BIGINT) or 0


def sse(event: str, data: Any, event_id: int) -> str:
    return f"id: {event_id}\nevent: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def sse_error(problem: ApiError, retry_seconds: int) -> str:
    """An `error` event: the problem document, and `retry` (ms) for the reconnect. It has no id, so a
    client's last event id stays that of the last event it really got, and it resumes from there."""
    data = json.dumps(problem.body(), separators=(",", ":"))
    return f"event: error\nretry: {retry_seconds * 1000}\ndata: {data}\n\n"


def current_status(session: Session, job: Job) -> dict[str, Any]:
    return status_event(job.status, job.stop_reason, job_with_findings(session, job))


def _subject(e: JobEvent) -> tuple[str, int | None]:
    """What an event is about: its epoch, or its finding (status events are each their own)."""
    return (e.kind, e.epoch if e.kind == "epoch" else e.finding_id)


def _render(session: Session, job: Job, events: list[JobEvent]) -> list[str]:
    """The SSE text of `events`, keeping only the newest event of each epoch and finding."""
    newest = {_subject(e): e.seq for e in events if e.kind != "status"}
    keep = [e for e in events if e.kind == "status" or newest[_subject(e)] == e.seq]
    # Only what the events name is read: a status change (a stream's usual wake-up) costs neither query.
    epoch_numbers = [e.epoch for e in keep if e.kind == "epoch"]
    finding_ids = [e.finding_id for e in keep if e.kind == "finding"]
    epochs = {r.epoch: r for r in session.execute(select(EpochMetrics).where(
        EpochMetrics.job_id == job.id, EpochMetrics.epoch.in_(epoch_numbers))).scalars()} if epoch_numbers else {}
    findings = {f.id: f for f in session.execute(select(Finding).where(
        Finding.id.in_(finding_ids))).scalars()} if finding_ids else {}
    out: list[str] = []
    resource: dict[str, Any] | None = None
    for e in keep:
        if e.kind == "status":
            resource = resource or job_with_findings(session, job)
            out.append(sse("status", status_event(e.status, e.stop_reason, resource), e.seq))
        elif e.kind == "epoch" and e.epoch in epochs:  # a resumed attempt may have dropped the row
            out.append(sse("epoch", metrics_item(epochs[e.epoch]), e.seq))
        elif e.kind == "finding" and e.finding_id in findings:
            out.append(sse("finding", finding_resource(findings[e.finding_id]), e.seq))
    return out


def _snapshot(session: Session, job_id: str) -> tuple[list[str], int]:
    """A fresh stream's start: the job now, then the newest version of each epoch and finding so far.

    The log's head is read before the job: each statement sees what was committed when it began, so a
    status change committed between the two reads (a worker claiming the job while its stream opens) is
    in the job read after the head, or after the head in the log, never skipped between a stale status and
    a head past its event. At worst the stream says the new status twice (now, then from the log)."""
    head = session.execute(select(func.max(JobEvent.seq)).where(JobEvent.job_id == job_id)).scalar_one_or_none() or 0
    job = load_owned(session, Job, job_id)
    latest = select(func.max(JobEvent.seq)).where(
        JobEvent.job_id == job.id, JobEvent.kind != "status", JobEvent.seq <= head,
    ).group_by(JobEvent.kind, JobEvent.epoch, JobEvent.finding_id)
    events = list(session.execute(select(JobEvent).where(JobEvent.seq.in_(latest)).order_by(JobEvent.seq)).scalars())
    return [sse("status", current_status(session, job), 0), *_render(session, job, events)], head


def _stream(job_id: str, cursor: int) -> Iterator[str]:
    svc = services()
    keepalive = svc.settings.events_keepalive_seconds
    sub = hub().subscribe(job_id)
    try:
        yield from _events(svc, job_id, cursor, keepalive, sub)
    except DATABASE_UNAVAILABLE as exc:
        # The headers are long sent, so no 503 now: say it in the stream and end it cleanly. The client
        # reconnects after `retry` with its last event id and misses nothing (every event is in the log).
        logger.warning("event stream of %s lost its database: %s", job_id, str(exc).splitlines()[0][:300])
        yield sse_error(database_unavailable(), DATABASE_RETRY_AFTER_SECONDS)
    finally:
        sub.close()


def _events(svc: Services, job_id: str, cursor: int, keepalive: float, sub: Subscription) -> Iterator[str]:
    """The stream itself: the snapshot (fresh streams), then the log after `cursor` until `end`."""
    if cursor == 0:
        with svc.db.session() as s:
            chunks, cursor = _snapshot(s, job_id)
        yield "".join(chunks)
    while True:
        with svc.db.session() as s:
            # The job first: when it is final, its final status event is already in the log.
            job = s.get(Job, job_id)
            if job is None:  # deleted while streamed
                return
            events = list(s.execute(
                select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.seq > cursor)
                .order_by(JobEvent.seq).limit(BATCH)
            ).scalars())
            chunks = _render(s, job, events)
            final = job.status in FINAL_STATUSES and len(events) < BATCH
        if events:
            cursor = events[-1].seq
        if chunks:
            yield "".join(chunks)
        if final:
            yield sse("end", {"status": job.status}, cursor + 1)
            return
        if len(events) == BATCH:
            continue
        if sub.draining:
            # This API process is stopping: everything up to now is sent; the client reconnects (to another
            # instance, or this service once it is back) with its last event id and misses nothing.
            yield sse_error(restarting(), RESTART_RETRY_SECONDS)
            return
        if not sub.wait(keepalive):
            yield ": keepalive\n\n"


def _until_revoked(chunks: Iterator[str]) -> Iterator[str]:
    """`chunks`, until the stream's token stops authenticating: a stream opened with a token revoked since
    ends at its next event or keep-alive, once this process's token cache lets go of it (the same bound as
    for the token's next request). The check is the request's own, so it costs no query on a cache hit."""
    svc = services()
    token = bearer_token()
    try:
        for chunk in chunks:
            try:
                revoked = authenticate_cached(svc.db, svc.tokens, token) is None
            except SQLAlchemyError:  # the database is away: the stream's own reads meet that, not this check
                revoked = False
            if revoked:
                logger.info("event stream of job %s ended: its token was revoked", request.view_args.get("job_id"))
                return
            yield chunk
    finally:
        chunks.close()  # type: ignore[attr-defined]


@bp.get("/v1/jobs/<job_id>/events")
def job_events(job_id: str) -> Response:
    cursor = _last_event_id()
    with services().db.session() as s:
        load_owned(s, Job, job_id)  # 404 (as a problem document) before the stream starts
    resp = Response(stream_with_context(_until_revoked(_stream(job_id, cursor))), mimetype="text/event-stream")
    resp.headers["Cache-Control"] = "no-cache"
    resp.headers["X-Accel-Buffering"] = "no"  # a proxy in front must not hold events back
    return resp
