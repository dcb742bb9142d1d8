"""The one writer of a job's labels: its `labels` column (what the job shows) and its `job_labels` rows (what
the jobs list filters on), always together, in the caller's transaction."""
from __future__ import annotations

from sqlalchemy import delete
from sqlalchemy.orm import Session

from trainyard.db.models import Job, JobLabel


def label_rows(job: Job, labels: dict[str, str]) -> list[JobLabel]:
    # The job's tenant and creation time ride along: the list pages a label's jobs on one index.
    return [JobLabel(job_id=job.id, key=key, value=value, tenant_id=job.tenant_id, created_at=job.created_at)
            for key, value in labels.items()]


def with_labels(job: Job, labels: dict[str, str]) -> Job:
    """A new job (not yet added to a session) carrying `labels`; its rows are inserted with it."""
    job.labels = dict(labels)
    job.label_rows = label_rows(job, labels)
    return job


def relabel(session: Session, job: Job, labels: dict[str, str]) -> None:
    """Replace the labels of `job` (a row of `session`, locked by the caller) with `labels`."""
    session.execute(delete(JobLabel).where(JobLabel.job_id == job.id))
    session.add_all(label_rows(job, labels))
    job.labels = dict(labels)
