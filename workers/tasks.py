"""The training task: the one module that joins the queue, the database and the trainer.

It takes a job id, reloads the row, and keeps no state of its own; the trainer reports through
`LeasedReporter` (a `DbReporter` that also stores resume backups). Deliveries are at least once: a
delivery trains only after taking the job's lease (`trainyard.lifecycle.claim`), and every write is
idempotent. Every status change goes through trainyard/lifecycle.py.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path

from trainyard import lifecycle, retention
from trainyard.datasets import DatasetError, load_builtin, load_csv, load_npz
from trainyard.db.models import Dataset
from trainyard.job_errors import JobError
from trainyard.lifecycle import Claim, training_error
from trainyard.logconfig import job_id_var
from trainyard.queue import TRAIN_TASK
from trainyard.stop_reasons import StopReason
from trainyard.store import ArtifactMissing, download_to
from trainyard.submission import enqueue
from trainyard.sweeps import controller as sweeps
from workers import environment
from workers.celery_app import app, runtime
from workers.interrupt import JobStopped, phase_of
from workers.resumable import LeasedReporter, prepare_resume
from workers.trainer import TrainData, describe_error, train

logger = logging.getLogger(__name__)


class JobFailed(Exception):
    def __init__(self, code: JobError, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _claim(job_id: str) -> Claim | None:
    """Take the job's lease (trainyard/lifecycle.py), or None when this delivery must not train it."""
    claimed = lifecycle.claim(runtime.db, job_id, runtime.worker_id, runtime.lease_seconds,
                              max_running_per_tenant=runtime.settings.max_running_jobs_per_tenant,
                              environment=lambda spec: environment.for_job(spec, runtime.worker_id,
                                                                                   runtime.settings.git_commit))
    if claimed is not None:
        runtime.hold(job_id, claimed.attempt)
    return claimed


def _requeue(claimed: Claim) -> None:
    """A graceful stop: the job goes back to the queue; the next attempt resumes from its last backup."""
    if lifecycle.requeue_interrupted(runtime.db, claimed.job_id, runtime.worker_id, claimed.attempt):
        enqueue(runtime.db, runtime.send, claimed.job_id, raise_errors=True)
        logger.info("job %s: stopped for shutdown after its last backup; re-queued", claimed.job_id)


def _stopped(claimed: Claim, exc: BaseException) -> None:
    """The attempt was stopped outside the trainer's batch-boundary path (workers/interrupt.py): a cancelled
    job ends cancelled, keeping its best checkpoint; an interrupted one goes back to the queue."""
    stop = runtime.interrupter
    logger.info("stopped (%s) while %s, %.1f s after the request", stop.reason, phase_of(exc.__traceback__),
                time.monotonic() - (stop.requested_at or 0.0))
    if stop.reason == StopReason.CANCELLED:
        lifecycle.end_cancelled(runtime.db, claimed.job_id, runtime.worker_id, claimed.attempt)
    elif not runtime.lease_lost.is_set():
        _requeue(claimed)


def _fail(claimed: Claim, code: JobError, message: str) -> None:
    # Fenced on the attempt still running: when the trainer already recorded the job's end (its own
    # failure, with its code), that record stands and this writes nothing.
    lifecycle.fail_attempt(runtime.db, claimed.job_id, runtime.worker_id, claimed.attempt, code, message)


def load_data(job_id: str, dataset_id: str, tmpdir: str) -> TrainData:
    try:
        if dataset_id.startswith("builtin:"):
            arrays = load_builtin(dataset_id.split(":", 1)[1])
        else:
            with runtime.db.session() as s:
                row = s.get(Dataset, dataset_id)
                if row is None:
                    raise JobFailed(JobError.DATASET_UNAVAILABLE,
                                    f"Data set {dataset_id} was deleted before the job started.")
                key, fmt, sha256, size = row.artifact_key, row.format, row.sha256, row.size_bytes
                target = (row.info or {}).get("target")
            path = runtime.dataset_cache.fetch(runtime.store, key, sha256, size, f".{fmt}",
                                               fallback=Path(tmpdir) / f"data.{fmt}")
            # The upload's caps again: what the store hands back is not trusted more than the upload was.
            limits = runtime.settings
            arrays = (load_npz(path, max_decompressed_bytes=limits.max_dataset_bytes) if fmt == "npz"
                      else load_csv(path, target, max_bytes=limits.max_upload_bytes))
    except (DatasetError, ArtifactMissing) as exc:
        raise JobFailed(JobError.DATASET_UNAVAILABLE, f"Data set {dataset_id} could not be read: {exc}") from exc
    return TrainData(**arrays)


def prepare_initial_weights(claimed: Claim, workdir: str) -> str | None:
    """A fork's starting weights (its own copy of the parent's artifact), downloaded into `workdir`."""
    key = claimed.initial_weights_key
    if key is None:
        return None
    path = Path(workdir) / "initial" / key.rsplit("/", 1)[-1]  # keeps .keras or .weights.h5: Keras reads either
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        download_to(runtime.store, key, path)
    except ArtifactMissing as exc:
        raise JobFailed(JobError.WORKER_ERROR,
                        f"The weights this fork starts from ({key}) are missing or damaged in the artifact "
                        "store; fork the parent again.") from exc
    return str(path)


@app.task(name=TRAIN_TASK, acks_late=True, ignore_result=True)
def train_job(job_id: str) -> None:
    # Every record logged while this job trains carries its id (JSON logs) and lands in its job logs.
    token = job_id_var.set(job_id)
    try:
        _train(job_id)
        # After every delivery, not only the one that trained: a redelivered message of a job that
        # succeeded (its worker died before acknowledging it) finishes what that worker's pruning left.
        _retain(job_id)
    finally:
        if runtime.job_logs is not None:
            runtime.job_logs.flush(timeout=5)
        job_id_var.reset(token)


def _train(job_id: str) -> None:
    claimed = _claim(job_id)
    if claimed is None:
        _top_up_sweep(job_id)
        return
    logger.info("attempt %d started on worker %s", claimed.attempt, runtime.worker_id)
    spec = claimed.spec
    runtime.settings.work_dir.mkdir(parents=True, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix=f"{job_id}-", dir=runtime.settings.work_dir)
    training = False
    try:
        # A stop request interrupts anything in here, in any phase (workers/interrupt.py).
        with runtime.interrupter.interruptible():
            began = time.perf_counter()
            data = load_data(job_id, spec["dataset"]["id"], workdir)
            resume = prepare_resume(runtime.db, runtime.store, claimed, workdir)
            initial_weights = prepare_initial_weights(claimed, workdir) if resume is None else None
            data_seconds = round(time.perf_counter() - began, 4)
            runtime.interrupter.check()
            if resume is not None:
                logger.info("resuming after epoch %d from the last backup", claimed.backup_epoch)
            max_runtime = (spec.get("limits") or {}).get("max_runtime_seconds")
            if max_runtime and resume is not None:
                # The limit covers the whole job, earlier attempts included.
                max_runtime = max(0.0, max_runtime - float(resume.state.get("elapsed_seconds") or 0.0))
            # retries=6: writes wait out about 12 s of database outage (a Postgres restart) before giving up.
            reporter = LeasedReporter(runtime.db, runtime.store, job_id, max_runtime_seconds=max_runtime,
                                      retries=6, worker_id=runtime.worker_id, attempt=claimed.attempt,
                                      shutting_down=runtime.shutting_down, lease_lost=runtime.lease_lost,
                                      interrupter=runtime.interrupter,
                                      epoch_hook=sweeps.trial_stopper(runtime.db, job_id),
                                      timings={"data": data_seconds})
            training = True
            result = train(spec, data, reporter, workdir, resume=resume, initial_weights=initial_weights,
                           export_formats=runtime.settings.export_formats)
        if result.stop_reason == StopReason.INTERRUPTED and not runtime.lease_lost.is_set():
            _requeue(claimed)
    except JobStopped as exc:
        _stopped(claimed, exc)
    except JobFailed as exc:
        logger.error("job failed: %s (%s)", exc.message, exc.code)
        _fail(claimed, exc.code, exc.message)
    except Exception as exc:
        if runtime.interrupter.reason is not None:
            # An interruption some library turned into an error of its own: the stop, not a failure.
            _stopped(claimed, exc)
        else:
            logger.exception("job %s failed", job_id)
            # The trainer records its own failures (lifecycle.FAILURES); this stands in when that write failed.
            if training:
                _fail(claimed, *training_error(describe_error(exc)))
            else:
                _fail(claimed, JobError.WORKER_ERROR,
                      f"The worker could not prepare the job: {describe_error(exc)}")
    finally:
        runtime.release()
        shutil.rmtree(workdir, ignore_errors=True)
        _top_up_sweep(job_id)


def _retain(job_id: str) -> None:
    """A job that succeeded keeps what TRAINYARD_KEEP_CHECKPOINTS says (trainyard/retention.py); a failure
    here is logged and never changes the job, which has ended."""
    if runtime.settings.keep_checkpoints != retention.KEEP_BEST:
        return
    try:
        retention.prune_succeeded(runtime.db, runtime.store, job_id)
    except Exception:
        logger.warning("job %s: could not delete its superseded checkpoints; they stay", job_id, exc_info=True)


def _top_up_sweep(job_id: str) -> None:
    """A trial's delivery ended: submit its sweep's next trials now (the heartbeat would, a beat later)."""
    try:
        sweeps.after_trial(runtime.db, runtime.send, job_id, runtime.settings.spec_limits)
    except Exception:
        logger.warning("job %s: could not top up its sweep; the heartbeat will", job_id, exc_info=True)
