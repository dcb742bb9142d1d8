"""A tenant's usage (`GET /v1/usage`): bytes stored by kind, jobs by status, training seconds.

Cheap at any number of jobs: two statements of aggregates (SUM, COUNT ... GROUP BY) on indexed columns, no
row loaded into Python. Each kind of stored bytes is summed from the rows that own the artifacts, whose
size each row records as the store wrote it. The tenant's jobs are read on a (tenant_id, ...) index, and
each job's artifacts looked up on their owner's key, so the cost follows the tenant's own jobs whatever
other tenants hold:
- checkpoints: `checkpoints.size_bytes` by (job_id, epoch);
- exports: `job_exports.size_bytes` by (job_id, format);
- resume_backups and initial_weights (a fork's own copy of its starting weights): the `artifacts` row of
  each job's `backup_key` / `initial_weights_key`, by primary key;
- datasets: `datasets.size_bytes` on (tenant_id, created_at).
Job logs are rows of `job_logs`, not artifacts, and are not counted.

Training seconds are wall-clock seconds from the first time a worker started a job (`started_at`) to its
end (`finished_at`), or to now while it runs: an interrupted job's wait in the queue between attempts
counts too. "This month" is the calendar month in UTC, and counts the part of each job's time inside it.
Finished jobs are read on `ix_jobs_tenant_finished` (tenant_id, finished_at, started_at) alone, running
ones on the (tenant_id, status) index.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import ColumnElement, Float, Select, cast, extract, func, literal, select
from sqlalchemy.orm import Session

from trainyard.db.exports import JobExport
from trainyard.db.models import JOB_STATUSES, Artifact, Checkpoint, Dataset, Job

STORED_KINDS = ("checkpoints", "exports", "resume_backups", "initial_weights", "datasets")


def month_start(now: datetime) -> datetime:
    """The first instant of `now`'s calendar month in UTC."""
    now = now.astimezone(timezone.utc)
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def usage_queries(tenant_id: str, now: datetime, sqlite: bool) -> tuple[Select[Any], Select[Any]]:
    """The two statements `tenant_usage` runs: one row of sums (bytes of each kind, then training seconds:
    finished jobs in all and this month, running jobs in all and this month), and jobs counted by status."""
    month = month_start(now)
    at, since = (now.replace(tzinfo=None), month.replace(tzinfo=None)) if sqlite else (now, month)

    def total(column: Any, *where: Any) -> Any:
        return select(func.coalesce(func.sum(column), 0)).where(*where).scalar_subquery()

    tenant_jobs = Job.tenant_id == tenant_id
    finished = (tenant_jobs, Job.finished_at.is_not(None), Job.started_at.is_not(None))
    running = (tenant_jobs, Job.status == "running", Job.finished_at.is_(None), Job.started_at.is_not(None))
    clipped = _greatest(Job.started_at, since, sqlite)

    def of_job(column: Any, where: Any) -> Any:
        # Looked up per job of the tenant on the owner's key (correlated): the cost follows the tenant's
        # own jobs, never the size of the table, where a join might hash the whole of it.
        return func.sum(select(func.sum(column)).where(where).scalar_subquery())

    job_bytes = select(
        of_job(Checkpoint.size_bytes, Checkpoint.job_id == Job.id).label("checkpoints"),
        of_job(JobExport.size_bytes, JobExport.job_id == Job.id).label("exports"),
        of_job(Artifact.size_bytes, Artifact.key == Job.backup_key).label("resume_backups"),
        of_job(Artifact.size_bytes, Artifact.key == Job.initial_weights_key).label("initial_weights"),
    ).where(tenant_jobs).subquery()
    sums = select(
        *(func.coalesce(job_bytes.c[kind], 0) for kind in STORED_KINDS[:4]),
        total(Dataset.size_bytes, Dataset.tenant_id == tenant_id),
        total(_seconds(Job.finished_at, Job.started_at, sqlite), *finished),
        total(_seconds(Job.finished_at, clipped, sqlite), *finished, Job.finished_at > since),
        total(_seconds(literal(at), Job.started_at, sqlite), *running),
        total(_seconds(literal(at), clipped, sqlite), *running),
    ).select_from(job_bytes)
    counts = select(Job.status, func.count()).where(tenant_jobs).group_by(Job.status)
    return sums, counts


def tenant_usage(session: Session, tenant_id: str, now: datetime) -> dict[str, Any]:
    """The tenant's usage at `now` (UTC-aware): {"stored_bytes", "jobs", "training_seconds", "month_start"}."""
    sums, counts_by_status = usage_queries(tenant_id, now, session.get_bind().dialect.name == "sqlite")
    row = session.execute(sums).one()
    stored = {kind: int(value) for kind, value in zip(STORED_KINDS, row[:5], strict=True)}
    finished_total, finished_month, running_total, running_month = (max(float(v), 0.0) for v in row[5:])
    counts = dict(session.execute(counts_by_status).all())
    jobs = {status: int(counts.get(status, 0)) for status in JOB_STATUSES}
    return {
        "stored_bytes": {"total": sum(stored.values()), **stored},
        "jobs": {"total": sum(int(n) for n in counts.values()), **jobs},
        "training_seconds": {"total": round(finished_total + running_total, 3),
                             "this_month": round(finished_month + running_month, 3)},
        "month_start": month_start(now),
    }


def _seconds(end: Any, start: Any, sqlite: bool) -> ColumnElement[Any]:
    if sqlite:  # timestamps are text there; julianday reads them
        return cast((func.julianday(end) - func.julianday(start)) * 86400.0, Float)
    return extract("epoch", end - start)


def _greatest(a: Any, b: datetime, sqlite: bool) -> ColumnElement[Any]:
    # SQLite's two-argument max() is its GREATEST.
    return func.max(a, b) if sqlite else func.greatest(a, b)
