"""Jobs: submit, list, read, cancel, delete, and per-epoch metrics."""
from __future__ import annotations

import hashlib
import logging
from typing import Any

from flask import Blueprint, Response, jsonify, request, url_for
from sqlalchemy import Text, bindparam, cast, delete, func, select, tuple_
from sqlalchemy.orm import Session

from service.api.common import decode_cursor, encode_cursor, int_arg, is_server_id, iso, json_body, tenant_id
from service.api.datasets import dataset_lookup
from service.api.idempotency import find_replay, idempotency_key, request_sha256
from service.app import services
from trainyard.db.exports import JobExport
from trainyard.db.live import JobWebhook
from trainyard.db.models import FINAL_STATUSES, JOB_STATUSES, Checkpoint, EpochMetrics, Finding, Job, Tenant
from service.errors import Conflict, NotFound, TooManyRequests, ValidationFailed
from trainyard.resources import gpus_of, queue_name
from trainyard.spec import SpecError, validate_spec
from trainyard import lifecycle
from trainyard.submission import new_job, submit
from trainyard.webhooks import validate_webhook

logger = logging.getLogger(__name__)

bp = Blueprint("jobs", __name__)


def job_links(job_id: str) -> dict[str, str]:
    return {
        "self": url_for("jobs.get_job", job_id=job_id),
        "metrics": url_for("jobs.get_metrics", job_id=job_id),
        "checkpoints": url_for("checkpoints.list_checkpoints", job_id=job_id),
        "best_checkpoint": url_for("checkpoints.download_best", job_id=job_id),
        "cancel": url_for("jobs.cancel_job", job_id=job_id),
        "diagnostics": url_for("diagnostics.get_diagnostics", job_id=job_id),
        "tensorboard": url_for("tensorboard.download_tensorboard", job_id=job_id),
        "events": url_for("events.job_events", job_id=job_id),
        "logs": url_for("logs.get_logs", job_id=job_id),
    }


SEVERITIES = ("error", "warning", "info")


def _no_findings() -> dict[str, Any]:
    return {"count": 0, "by_severity": dict.fromkeys(SEVERITIES, 0)}


def finding_counts(session: Session, job_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Findings per job and severity, in one grouped query for a whole page of jobs."""
    counts: dict[str, dict[str, Any]] = {}
    if not job_ids:
        return counts
    rows = session.execute(
        select(Finding.job_id, Finding.severity, func.count())
        .where(Finding.job_id.in_(job_ids)).group_by(Finding.job_id, Finding.severity)
    )
    for job_id, severity, n in rows:
        entry = counts.setdefault(job_id, _no_findings())
        entry["count"] += n
        entry["by_severity"][severity] = entry["by_severity"].get(severity, 0) + n
    return counts


def queue_positions(session: Session, job_ids: list[str]) -> dict[str, int]:
    """1-based FIFO positions of these jobs among the queued jobs of their resource class, in one query.

    The order is the broker's: when the job's message was (last) sent, so a job re-queued after its worker
    died queues behind the jobs already waiting, as its message does.
    """
    if not job_ids:
        return {}
    order = func.row_number().over(
        partition_by=Job.resource_class,
        order_by=(func.coalesce(Job.enqueued_at, Job.created_at), Job.id),
    )
    ranked = select(Job.id.label("id"), order.label("position")).where(Job.status == "queued").subquery()
    rows = session.execute(select(ranked.c.id, ranked.c.position).where(ranked.c.id.in_(job_ids)))
    return {job_id: int(position) for job_id, position in rows}


def job_resource(job: Any, findings: dict[str, Any] | None = None, position: int | None = None) -> dict[str, Any]:
    best = None
    if job.best_epoch is not None:
        best = {"monitor": job.best_monitor, "value": job.best_value, "epoch": job.best_epoch}
    error = None
    if job.error_code:
        error = {"code": job.error_code, "message": job.error_message}
    info = job.model_info or {}
    return {
        "id": job.id,
        "name": job.name,
        "status": job.status,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        # Jobs submitted before resource classes existed have no `resources`: they asked for none.
        "spec": job.spec if "resources" in job.spec else {**job.spec, "resources": {"gpus": None}},
        "progress": {"epoch": job.epoch, "epochs": job.epochs},
        "best": best,
        "stop_reason": job.stop_reason,
        "test_metrics": job.test_metrics,
        "error": error,
        "attempts": job.attempts,
        "cancel_requested": job.cancel_requested,
        "model": {
            "params": info.get("params"),
            "trainable_params": info.get("trainable_params"),
            "normalization": info.get("normalization"),
        }
        if info
        else None,
        "findings": findings or _no_findings(),
        "timings": job_timings(job),
        "sweep": {"id": job.sweep_id, "trial": job.trial_index} if job.sweep_id else None,
        "resources": {"gpus": gpus_of(job.resource_class), "class": job.resource_class},
        # While queued: the Celery queue of its resource class and its place in it (1 = next).
        "queue": {"name": queue_name(job.resource_class), "position": position}
        if job.status == "queued" and position is not None
        else None,
        "links": job_links(job.id),
    }


def job_timings(job: Job) -> dict[str, float] | None:
    """Where a job's time went: waiting in the queue, then the worker's phases once it has finished."""
    if job.started_at is None:
        return None
    out = {"queued_seconds": round((job.started_at - job.created_at).total_seconds(), 4)}
    for phase, seconds in ((job.model_info or {}).get("timings") or {}).items():
        out[f"{phase}_seconds"] = seconds
    if job.finished_at is not None:
        out["total_seconds"] = round((job.finished_at - job.created_at).total_seconds(), 4)
    return out


def job_with_findings(session: Session, job: Job) -> dict[str, Any]:
    """One job's resource, with its finding counts and, while queued, its queue position."""
    position = queue_positions(session, [job.id]).get(job.id) if job.status == "queued" else None
    return job_resource(job, finding_counts(session, [job.id]).get(job.id), position)


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


# Jobs with their finding counts per severity, in one round trip: a status poll or a list page is one
# query. Built once; only the parameters change.
_JOBS_WITH_FINDINGS = select(
    Job,
    *(select(func.count()).where(Finding.job_id == Job.id, Finding.severity == severity).correlate(Job)
      .scalar_subquery() for severity in SEVERITIES),
)
# The status poll's query in Core: plain rows (read by column name like a Job), no ORM identity map.
_JOB_ROW_WITH_FINDINGS = select(
    *Job.__table__.c,
    *(select(func.count()).where(Finding.job_id == Job.id, Finding.severity == severity).correlate(Job)
      .scalar_subquery() for severity in SEVERITIES),
).where(Job.id == bindparam("job_id"), Job.tenant_id == bindparam("tenant_id"))
_COLUMNS = len(Job.__table__.c)


def _counts(per_severity: Any) -> dict[str, Any]:
    """The finding counts of a job from its per-severity columns (in SEVERITIES order)."""
    return {"count": sum(per_severity), "by_severity": dict(zip(SEVERITIES, per_severity))}


def _with_counts(row: Any) -> tuple[Job, dict[str, Any]]:
    job, *per_severity = row
    return job, _counts(per_severity)


def job_row_with_findings(job_id: str) -> tuple[Any, dict[str, Any]]:
    """One job of this tenant as a row (its columns by name, as on a Job) and its finding counts, in one
    round trip; another tenant's job answers 404, as a missing one."""
    if not is_server_id(job_id, "job"):  # never query with an id this server cannot have issued
        raise NotFound(f"There is no job {job_id}.")
    with services().db.read_connection() as conn:
        row = conn.execute(_JOB_ROW_WITH_FINDINGS, {"job_id": job_id, "tenant_id": tenant_id()}).first()
    if row is None:
        raise NotFound(f"There is no job {job_id}.")
    per_severity = row[_COLUMNS:]
    return row, _counts(per_severity)


def load_job(session: Session, job_id: str) -> Job:
    job = session.get(Job, job_id) if is_server_id(job_id, "job") else None
    # Another tenant's job answers exactly like a missing one: ids must not leak across tenants.
    if job is None or job.tenant_id != tenant_id():
        raise NotFound(f"There is no job {job_id}.")
    return job


@bp.post("/v1/jobs")
def submit_job() -> tuple[Response, int, dict[str, str]]:
    svc = services()
    raw = json_body(svc.settings.max_json_bytes)
    key = idempotency_key()
    body_sha256 = request_sha256(raw) if key else None
    if key and (earlier := find_replay(svc.db, tenant_id(), key, body_sha256)) is not None:
        return _replayed(earlier)
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
        return _replayed(find_replay(svc.db, tenant_id(), key or "", body_sha256 or "") or job)
    # A job just created has no findings yet: only its queue position is read back.
    with svc.db.read_session() as s:
        body = job_resource(job, None, queue_positions(s, [job.id]).get(job.id))
    return jsonify(body), 201, {"Location": url_for("jobs.get_job", job_id=job.id)}


def _replayed(job: Job) -> tuple[Response, int, dict[str, str]]:
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
    stmt = _JOBS_WITH_FINDINGS.where(Job.tenant_id == tenant_id())
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
        rows = [_with_counts(row) for row in s.execute(stmt)]
        page = rows[:limit]
        positions = queue_positions(s, [job.id for job, _ in page if job.status == "queued"])
    last = page[-1][0] if page else None
    next_cursor = encode_cursor(last.created_at, last.id) if last is not None and len(rows) > limit else None
    return jsonify({"jobs": [job_resource(job, counts, positions.get(job.id)) for job, counts in page],
                    "next_cursor": next_cursor})


@bp.get("/v1/jobs/<job_id>")
def get_job(job_id: str) -> Response:
    job, findings = job_row_with_findings(job_id)
    position = None
    if job.status == "queued":
        with services().db.read_session() as s:
            position = queue_positions(s, [job.id]).get(job.id)
    resp = jsonify(job_resource(job, findings, position))
    # A strong validator of the exact representation: pollers send If-None-Match and get a bodiless 304
    # until something in the job changes.
    resp.set_etag(hashlib.sha256(resp.get_data()).hexdigest()[:32])
    return resp.make_conditional(request)


@bp.post("/v1/jobs/<job_id>/cancel")
def cancel_job(job_id: str) -> tuple[Response, int]:
    with services().db.session() as s:
        job = load_job(s, job_id)
        if job.status in FINAL_STATUSES:
            raise Conflict(f"Job {job_id} already ended ({job.status}); there is nothing to cancel.")
        lifecycle.request_cancel(job)
        return jsonify(job_with_findings(s, job)), 202


@bp.delete("/v1/jobs/<job_id>")
def delete_job(job_id: str) -> tuple[str, int]:
    svc = services()
    with svc.db.session() as s:
        job = load_job(s, job_id)
        if job.status not in FINAL_STATUSES:
            raise Conflict(f"Job {job_id} is {job.status}; cancel it and wait for it to end before deleting it.")
        keys = list(s.execute(select(Checkpoint.artifact_key).where(Checkpoint.job_id == job_id)).scalars())
        keys += s.execute(select(JobExport.artifact_key).where(JobExport.job_id == job_id)).scalars()
        if job.backup_key:  # the last resume backup outlives the run; it goes with the job
            keys.append(job.backup_key)
    for key in keys:
        svc.store.delete(key)
    with svc.db.session() as s:
        s.execute(delete(Job).where(Job.id == job_id))
    return "", 204


@bp.get("/v1/jobs/<job_id>/metrics")
def get_metrics(job_id: str) -> Response:
    after = int_arg("after", 0, minimum=0, maximum=10_000_000)
    with services().db.read_session() as s:
        load_job(s, job_id)
        # A long run has thousands of epochs: each row's values come as the database's JSON text and are
        # spliced into the body, never decoded into dicts and encoded again.
        rows = s.execute(
            select(EpochMetrics.epoch, cast(EpochMetrics.values, Text))
            .where(EpochMetrics.job_id == job_id, EpochMetrics.epoch > after).order_by(EpochMetrics.epoch)
        ).all()
    body = ",".join(_epoch_object(epoch, values) for epoch, values in rows)
    return Response(f'{{"epochs":[{body}]}}\n', mimetype="application/json")


def _epoch_object(epoch: int, values_json: str) -> str:
    """`{"epoch": N, ...values}` from a row's JSON object text, by splicing the epoch in after its `{`."""
    rest = values_json.strip()[1:].lstrip()
    return f'{{"epoch":{int(epoch)}}}' if rest.startswith("}") else f'{{"epoch":{int(epoch)},{rest}'


def metrics_item(row: EpochMetrics) -> dict[str, Any]:
    """One item of GET /v1/jobs/{id}/metrics, from an ORM row (the events stream's `epoch` events)."""
    return {"epoch": row.epoch, **row.values}
