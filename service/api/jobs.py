"""Jobs: submit, list, read, cancel, delete, and per-epoch metrics."""
from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, jsonify, request, url_for
from sqlalchemy import Text, bindparam, cast, delete, func, select, tuple_, update
from sqlalchemy.orm import Session

from service.api.common import decode_cursor, encode_cursor, int_arg, iso, json_body, tenant_id
from service.api.datasets import dataset_lookup
from service.api.idempotency import find_replay, idempotency_key, insert_once, request_sha256
from service.app import services
from service.db.models import FINAL_STATUSES, JOB_STATUSES, Checkpoint, EpochMetrics, Finding, Job, utcnow
from service.errors import Conflict, NotFound, ValidationFailed
from service.queue import enqueue_job
from service.spec import SpecError, validate_spec

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


def job_resource(job: Any, findings: dict[str, Any] | None = None) -> dict[str, Any]:
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
        "spec": job.spec,
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
        "links": job_links(job.id),
    }


def job_with_findings(session: Session, job: Job) -> dict[str, Any]:
    """One job's resource, with its finding counts."""
    return job_resource(job, finding_counts(session, [job.id]).get(job.id))


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


def _with_counts(row: Any) -> tuple[Job, dict[str, Any]]:
    job, *per_severity = row
    return job, {"count": sum(per_severity), "by_severity": dict(zip(SEVERITIES, per_severity))}


def job_row_with_findings(job_id: str) -> tuple[Any, dict[str, Any]]:
    """One job of this tenant as a row (its columns by name, as on a Job) and its finding counts, in one
    round trip; another tenant's job answers 404, as a missing one."""
    with services().db.read_connection() as conn:
        row = conn.execute(_JOB_ROW_WITH_FINDINGS, {"job_id": job_id, "tenant_id": tenant_id()}).first()
    if row is None:
        raise NotFound(f"There is no job {job_id}.")
    per_severity = row[_COLUMNS:]
    return row, {"count": sum(per_severity), "by_severity": dict(zip(SEVERITIES, per_severity))}


def load_job(session: Session, job_id: str) -> Job:
    job = session.get(Job, job_id)
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
    with svc.db.session() as s:
        try:
            spec = validate_spec(raw, datasets=dataset_lookup(s, tenant_id()), limits=svc.settings.spec_limits)
        except SpecError as exc:
            raise ValidationFailed(
                "The job spec is not valid: " + "; ".join(f"{e['field'] or 'body'}: {e['message']}" for e in exc.errors[:3])
                + (f" (and {len(exc.errors) - 3} more)" if len(exc.errors) > 3 else ""),
                errors=exc.errors,
            ) from None
        job = Job(tenant_id=tenant_id(), name=spec.get("name"), status="queued", spec=spec,
                  epochs=spec["training"]["epochs"], idempotency_key=key, request_sha256=body_sha256)
        if key is None:
            s.add(job)
    if key is not None:
        job, replayed = insert_once(svc.db, job)
        if replayed:
            return _replayed(job)
    # Enqueue only after the row is committed: a worker must always find the job it is handed.
    try:
        enqueue_job(svc.celery, job.id)
    except Exception:  # the broker is down: the workers' outbox sweep enqueues it once it is back
        logger.exception("could not enqueue job %s; the outbox sweep will retry", job.id)
    else:
        _mark_enqueued(job.id)
    return jsonify(job_resource(job)), 201, {"Location": url_for("jobs.get_job", job_id=job.id)}


def _mark_enqueued(job_id: str) -> None:
    # One statement in autocommit: one round trip instead of BEGIN, UPDATE, COMMIT.
    with services().db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(update(Job).where(Job.id == job_id, Job.enqueued_at.is_(None)).values(enqueued_at=utcnow()))


def _replayed(job: Job) -> tuple[Response, int, dict[str, str]]:
    # The same answer as the first request gave (which enqueued the job), marked as a replay.
    return jsonify(job_resource(job)), 201, {"Location": url_for("jobs.get_job", job_id=job.id),
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
    last = page[-1][0] if page else None
    next_cursor = encode_cursor(last.created_at, last.id) if last is not None and len(rows) > limit else None
    return jsonify({"jobs": [job_resource(job, counts) for job, counts in page], "next_cursor": next_cursor})


@bp.get("/v1/jobs/<job_id>")
def get_job(job_id: str) -> Response:
    job, findings = job_row_with_findings(job_id)
    return jsonify(job_resource(job, findings))


@bp.post("/v1/jobs/<job_id>/cancel")
def cancel_job(job_id: str) -> tuple[Response, int]:
    with services().db.session() as s:
        job = load_job(s, job_id)
        if job.status in FINAL_STATUSES:
            raise Conflict(f"Job {job_id} already ended ({job.status}); there is nothing to cancel.")
        job.cancel_requested = True
        if job.status == "queued":
            # A queued job is final at once; the worker that later receives its message skips it.
            job.status = "cancelled"
            job.stop_reason = "cancelled"
            job.finished_at = utcnow()
        return jsonify(job_with_findings(s, job)), 202


@bp.delete("/v1/jobs/<job_id>")
def delete_job(job_id: str) -> tuple[str, int]:
    svc = services()
    with svc.db.session() as s:
        job = load_job(s, job_id)
        if job.status not in FINAL_STATUSES:
            raise Conflict(f"Job {job_id} is {job.status}; cancel it and wait for it to end before deleting it.")
        keys = list(s.execute(select(Checkpoint.artifact_key).where(Checkpoint.job_id == job_id)).scalars())
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
