"""Jobs: submit, list, read, cancel and delete (their metrics: job_metrics.py)."""
from __future__ import annotations

import hashlib
import logging
from typing import Any

from flask import Blueprint, Response, jsonify, request, url_for
from sqlalchemy import delete, func, select, tuple_
from sqlalchemy.orm import Session

from service.api.common import (decode_cursor, encode_cursor, int_arg, json_body, load_owned, load_owned_row,
                                tenant_id)
from service.api.idempotency import find_replay, idempotency_key, request_sha256
from service.api.representations import (JOB_ROW_WITH_FINDINGS, JOBS_WITH_FINDINGS, children_of, job_and_counts,
                                         job_etas, job_resource, job_row_counts, job_row_recent, job_with_findings,
                                         queue_positions, running_etas)
from service.errors import Conflict, TooManyRequests, ValidationFailed
from service.services import services
from trainyard.datasets.lookup import dataset_lookup
from trainyard.db.exports import JobExport
from trainyard.db.live import JobWebhook
from trainyard.db.models import FINAL_STATUSES, JOB_STATUSES, Checkpoint, Job, Tenant, utcnow
from trainyard.spec import SpecError, validate_spec
from trainyard import lifecycle
from trainyard.submission import new_job, submit
from trainyard.webhooks import validate_webhook

logger = logging.getLogger(__name__)

bp = Blueprint("jobs", __name__)


# How long a client told "too many active jobs" should wait: about one short job, or a cancellation.
QUOTA_RETRY_AFTER_SECONDS = 30


def check_active_job_quota(session: Session, tenant: str, limit: int) -> None:
    """429 when the tenant already has `limit` jobs queued or running.

    The tenant's row is locked first (Postgres; SQLite serialises writers anyway), so two concurrent
    submissions cannot both see the last free slot: the second waits for the first to commit and counts it.
    """
    session.execute(select(Tenant.id).where(Tenant.id == tenant).with_for_update())
    active = session.execute(
        select(func.count()).select_from(Job).where(Job.tenant_id == tenant, Job.status.in_(("queued", "running")))
    ).scalar_one()
    if active >= limit:
        raise TooManyRequests(
            f"This tenant already has {active} jobs queued or running, the most allowed at once ({limit}). "
            "Wait for one to end, or cancel one, then submit again.",
            headers={"Retry-After": str(QUOTA_RETRY_AFTER_SECONDS)},
            extra={"active_jobs": active, "limit": limit},
        )


def job_row_with_findings(job_id: str) -> tuple[Any, dict[str, Any], bool]:
    """One job of this tenant as a row (its columns by name, as on a Job), its finding counts and whether it
    has forks, in one round trip, without the ORM: the status poll's path."""
    with services().db.read_connection() as conn:
        row = load_owned_row(conn, Job, job_id, JOB_ROW_WITH_FINDINGS)
    return row, *job_row_counts(row)


@bp.post("/v1/jobs")
def submit_job() -> tuple[Response, int, dict[str, str]]:
    svc = services()
    raw = json_body(svc.settings.max_json_bytes)
    key = idempotency_key()
    body_sha256 = request_sha256(raw) if key else None
    if key and (earlier := find_replay(svc.db, tenant_id(), key, body_sha256)) is not None:
        return replayed_response(earlier)
    # The webhook is checked on its own (it resolves the host) and kept out of the trainer's spec but
    # its URL and events; the secret goes to its own table and is never shown again.
    raw_webhook = raw.pop("webhook", None) if isinstance(raw, dict) else None
    webhook, secret, errors = (None, None, [])
    if raw_webhook is not None:
        webhook, secret, errors = validate_webhook(raw_webhook, svc.settings.webhook_allow_private)
    with svc.db.session() as s:
        try:
            spec = validate_spec(raw, datasets=dataset_lookup(s, tenant_id()), limits=svc.settings.spec_limits)
        except SpecError as exc:
            errors = exc.errors + errors
        if errors:
            raise ValidationFailed(
                "The job spec is not valid: " + "; ".join(f"{e['field'] or 'body'}: {e['message']}" for e in errors[:3])
                + (f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""),
                errors=errors,
            ) from None
    if webhook is not None:
        spec["webhook"] = webhook
    job = new_job(tenant_id(), spec, idempotency_key=key, request_sha256=body_sha256)
    hooks = [] if webhook is None else [JobWebhook(job_id=job.id, url=webhook["url"], events=webhook["events"],
                                                   secret=secret, epoch_events="epoch" in webhook["events"])]
    limit = svc.settings.max_active_jobs_per_tenant
    queue_class = job.resource_class
    job, replayed = submit(svc.db, lambda job_id: svc.send(job_id, queue_class), job,
                           with_rows=hooks,
                           before_insert=lambda session: check_active_job_quota(session, tenant_id(), limit))
    if replayed:  # a concurrent request with the same key won the race (409 if its body was different)
        return replayed_response(find_replay(svc.db, tenant_id(), key or "", body_sha256 or "") or job)
    # A job just created has no findings yet: only its queue position (and estimate) is read back.
    with svc.db.read_session() as s:
        positions = queue_positions(s, [job.id])
        body = job_resource(job, None, positions.get(job.id), job_etas(s, [job], positions).get(job.id))
    return jsonify(body), 201, {"Location": url_for("jobs.get_job", job_id=job.id)}


def replayed_response(job: Job) -> tuple[Response, int, dict[str, str]]:
    # The same answer as the first request gave (which enqueued the job), marked as a replay.
    with services().db.session() as s:
        body = job_with_findings(s, s.get(Job, job.id) or job)
    return jsonify(body), 201, {"Location": url_for("jobs.get_job", job_id=job.id),
                                             "Idempotent-Replayed": "true"}


@bp.get("/v1/jobs")
def list_jobs() -> Response:
    limit = int_arg("limit", 20, minimum=1, maximum=200)
    status = request.args.get("status")
    if status is not None and status not in JOB_STATUSES:
        raise ValidationFailed(
            f"Unknown status {status!r}.",
            errors=[{"field": "query.status", "message": f"Must be one of: {', '.join(JOB_STATUSES)}."}],
        )
    cursor = request.args.get("cursor")
    stmt = JOBS_WITH_FINDINGS.where(Job.tenant_id == tenant_id())
    if status:
        stmt = stmt.where(Job.status == status)
    svc = services()
    if cursor:
        created, job_id = decode_cursor(cursor)
        if svc.settings.is_embedded:
            created = created.replace(tzinfo=None)
        # A row-value comparison, not `a < x OR (a = x AND id < y)`: Postgres turns it into a bound on the
        # (tenant_id, [status,] created_at, id) index, so page 200 costs what page 1 does.
        stmt = stmt.where(tuple_(Job.created_at, Job.id) < tuple_(created, job_id))
    stmt = stmt.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1)
    with svc.db.read_session() as s:
        rows = [job_and_counts(row) for row in s.execute(stmt)]
        page = rows[:limit]
        positions = queue_positions(s, [job.id for job, _, _, _ in page if job.status == "queued"])
        etas = job_etas(s, [job for job, _, _, _ in page], positions,
                        {job.id: recent for job, _, _, recent in page})
        children = children_of(s, [job.id for job, _, forked, _ in page if forked])
    last = page[-1][0] if page else None
    next_cursor = encode_cursor(last.created_at, last.id) if last is not None and len(rows) > limit else None
    return jsonify({"jobs": [job_resource(job, counts, positions.get(job.id), etas.get(job.id), children.get(job.id))
                             for job, counts, _, _ in page],
                    "next_cursor": next_cursor})


@bp.get("/v1/jobs/<job_id>")
def get_job(job_id: str) -> Response:
    job, findings, forked = job_row_with_findings(job_id)
    positions: dict[str, int] = {}
    estimate, children = None, None
    if job.status == "running":  # its latest epochs came with the row: no query more
        estimate = running_etas([job], {job.id: job_row_recent(job)}, utcnow()).get(job.id)
    if job.status == "queued" or forked:
        with services().db.read_session() as s:
            if job.status == "queued":  # its queue position, and recent run times of its class
                positions = queue_positions(s, [job.id])
                estimate = job_etas(s, [job], positions).get(job.id)
            if forked:
                children = children_of(s, [job.id]).get(job.id)
    resp = jsonify(job_resource(job, findings, positions.get(job.id), estimate, children))
    # A strong validator of the exact representation: pollers send If-None-Match and get a bodiless 304
    # until something in the job changes (while it is queued or running, its `eta.seconds` counts down).
    resp.set_etag(hashlib.sha256(resp.get_data()).hexdigest()[:32])
    return resp.make_conditional(request)


@bp.post("/v1/jobs/<job_id>/cancel")
def cancel_job(job_id: str) -> tuple[Response, int]:
    with services().db.session() as s:
        job = load_owned(s, Job, job_id)
        if job.status in FINAL_STATUSES:
            raise Conflict(f"Job {job_id} already ended ({job.status}); there is nothing to cancel.")
        lifecycle.request_cancel(job)
        return jsonify(job_with_findings(s, job)), 202


@bp.delete("/v1/jobs/<job_id>")
def delete_job(job_id: str) -> tuple[str, int]:
    svc = services()
    with svc.db.session() as s:
        job = load_owned(s, Job, job_id)
        if job.status not in FINAL_STATUSES:
            raise Conflict(f"Job {job_id} is {job.status}; cancel it and wait for it to end before deleting it.")
        keys = list(s.execute(select(Checkpoint.artifact_key).where(Checkpoint.job_id == job_id)).scalars())
        keys += s.execute(select(JobExport.artifact_key).where(JobExport.job_id == job_id)).scalars()
        if job.backup_key:  # the last resume backup outlives the run; it goes with the job
            keys.append(job.backup_key)
        if job.initial_weights_key:  # a fork's own copy of the weights it started from
            keys.append(job.initial_weights_key)
    for key in keys:
        svc.store.delete(key)
    with svc.db.session() as s:
        s.execute(delete(Job).where(Job.id == job_id))
    return "", 204
