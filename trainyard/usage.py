"""A tenant's usage (`GET /v1/usage`): bytes stored by kind, jobs by status, training seconds.

Cheap at any number of jobs: two statements of aggregates (SUM, COUNT ... GROUP BY) on indexed columns, no
row loaded into Python. Each kind of stored bytes is summed from the rows that own the artifacts, whose
size each row records as the store wrote it:
- checkpoints: `checkpoints.size_bytes` of the tenant's jobs (the jobs' tenant index, then each job's
  checkpoints by their (job_id, epoch) key);
- exports: `job_exports.size_bytes` the same way;
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

from sqlalchemy import ColumnElement, Float, cast, extract, func, literal, select
from sqlalchemy.orm import Session

from trainyard.db.exports import JobExport
from trainyard.db.models import JOB_STATUSES, Artifact, Checkpoint, Dataset, Job

STORED_KINDS = ("checkpoints", "exports", "resume_backups", "initial_weights", "datasets")


def month_start(now: datetime) -> datetime:
    """The first instant of `now`'s calendar month in UTC."""
    now = now.astimezone(timezone.utc)
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def tenant_usage(session: Session, tenant_id: str, now: datetime) -> dict[str, Any]:
    """The tenant's usage at `now` (UTC-aware): {"stored_bytes", "jobs", "training_seconds", "month_start"}."""
    sqlite = session.get_bind().dialect.name == "sqlite"
    month = month_start(now)
    at, since = (now.replace(tzinfo=None), month.replace(tzinfo=None)) if sqlite else (now, month)

    def total(column: Any, *where: Any, joined: Any = None, on: Any = None) -> Any:
        stmt = select(func.coalesce(func.sum(column), 0))
        if joined is not None:
            stmt = stmt.select_from(Job).join(joined, on)
        return stmt.where(*where).scalar_subquery()

    tenant_jobs = Job.tenant_id == tenant_id
    finished = (tenant_jobs, Job.finished_at.is_not(None), Job.started_at.is_not(None))
    running = (tenant_jobs, Job.status == "running", Job.finished_at.is_(None), Job.started_at.is_not(None))
    clipped = _greatest(Job.started_at, since, sqlite)
    row = session.execute(select(
        total(Checkpoint.size_bytes, tenant_jobs, joined=Checkpoint, on=Checkpoint.job_id == Job.id),
        total(JobExport.size_bytes, tenant_jobs, joined=JobExport, on=JobExport.job_id == Job.id),
        total(Artifact.size_bytes, tenant_jobs, joined=Artifact, on=Artifact.key == Job.backup_key),
        total(Artifact.size_bytes, tenant_jobs, joined=Artifact, on=Artifact.key == Job.initial_weights_key),
        total(Dataset.size_bytes, Dataset.tenant_id == tenant_id),
        total(_seconds(Job.finished_at, Job.started_at, sqlite), *finished),
        total(_seconds(Job.finished_at, clipped, sqlite), *finished, Job.finished_at > since),
        total(_seconds(literal(at), Job.started_at, sqlite), *running),
        total(_seconds(literal(at), clipped, sqlite), *running),
    )).one()
    stored = {kind: int(value) for kind, value in zip(STORED_KINDS, row[:5], strict=True)}
    finished_total, finished_month, running_total, running_month = (max(float(v), 0.0) for v in row[5:])
    counts = dict(session.execute(select(Job.status, func.count()).where(tenant_jobs).group_by(Job.status)).all())
    jobs = {status: int(counts.get(status, 0)) for status in JOB_STATUSES}
    return {
        "stored_bytes": {"total": sum(stored.values()), **stored},
        "jobs": {"total": sum(int(n) for n in counts.values()), **jobs},
        "training_seconds": {"total": round(finished_total + running_total, 3),
                             "this_month": round(finished_month + running_month, 3)},
        "month_start": month,
    }


def _seconds(end: Any, start: Any, sqlite: bool) -> ColumnElement[Any]:
    if sqlite:  # timestamps are text there; julianday reads them
        return cast((func.julianday(end) - func.julianday(start)) * 86400.0, Float)
    return extract("epoch", end - start)


def _greatest(a: Any, b: datetime, sqlite: bool) -> ColumnElement[Any]:
    # SQLite's two-argument max() is its GREATEST.
    return func.max(a, b) if sqlite else func.greatest(a, b)
