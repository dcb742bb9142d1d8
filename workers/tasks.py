"""The training task: the one module that joins the queue, the database and the trainer.

It takes a job id, reloads the row, and keeps no state of its own; the trainer reports through
`DbReporter`. Deliveries are at least once, so every write is idempotent.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
from typing import Any

from service.datasets import DatasetError, load_builtin, load_csv, load_npz
from service.db.models import FINAL_STATUSES, Dataset, Job, utcnow
from service.queue import TRAIN_TASK
from service.store import ArtifactMissing, download_to
from workers.celery_app import app, runtime
from workers.reporting import DbReporter
from workers.trainer import TrainData, train

logger = logging.getLogger(__name__)


class JobFailed(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _claim(job_id: str) -> dict[str, Any] | None:
    """Move the job to running and return its spec, or None when there is nothing to run."""
    with runtime.db.session() as s:
        job = s.get(Job, job_id, with_for_update=True)
        if job is None:
            logger.warning("job %s does not exist (deleted?); dropping its message", job_id)
            return None
        if job.status in FINAL_STATUSES:
            logger.info("job %s is already %s; nothing to do", job_id, job.status)
            return None
        if job.cancel_requested:
            job.status, job.stop_reason, job.finished_at = "cancelled", "cancelled", utcnow()
            return None
        job.status = "running"
        job.started_at = job.started_at or utcnow()
        job.attempts += 1
        job.worker_id = runtime.worker_id
        return job.spec


def _fail(job_id: str, code: str, message: str) -> None:
    with runtime.db.session() as s:
        job = s.get(Job, job_id)
        if job is not None:
            job.status, job.error_code, job.error_message = "failed", code, message
            job.stop_reason = job.stop_reason or "error"
            job.finished_at = utcnow()


def load_data(job_id: str, dataset_id: str, tmpdir: str) -> TrainData:
    try:
        if dataset_id.startswith("builtin:"):
            arrays = load_builtin(dataset_id.split(":", 1)[1])
        else:
            with runtime.db.session() as s:
                row = s.get(Dataset, dataset_id)
                key, fmt, target = (row.artifact_key, row.format, (row.info or {}).get("target")) if row else (None, None, None)
            if key is None:
                raise JobFailed("dataset_unavailable", f"Data set {dataset_id} was deleted before the job started.")
            path = f"{tmpdir}/data.{fmt}"
            download_to(runtime.store, key, path)
            arrays = load_npz(path) if fmt == "npz" else load_csv(path, target)
    except (DatasetError, ArtifactMissing) as exc:
        raise JobFailed("dataset_unavailable", f"Data set {dataset_id} could not be read: {exc}") from exc
    return TrainData(**arrays)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


@app.task(name=TRAIN_TASK, acks_late=True, ignore_result=True)
def train_job(job_id: str) -> None:
    spec = _claim(job_id)
    if spec is None:
        return
    runtime.settings.work_dir.mkdir(parents=True, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix=f"{job_id}-", dir=runtime.settings.work_dir)
    try:
        data = load_data(job_id, spec["dataset"]["id"], workdir)
        reporter = DbReporter(runtime.db, runtime.store, job_id,
                              max_runtime_seconds=(spec.get("limits") or {}).get("max_runtime_seconds"))
        train(spec, data, reporter, workdir)
    except JobFailed as exc:
        _fail(job_id, exc.code, exc.message)
    except Exception as exc:
        logger.exception("job %s failed", job_id)
        _fail(job_id, "training_error", f"Training stopped with an error: {type(exc).__name__}: {_one_line(exc)}")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
