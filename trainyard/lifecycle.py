"""A job's lifecycle: every change of a job's status is made here, and only here.

    queued ──claim──▶ running ──end_run / fail_attempt / end_cancelled──▶ succeeded | failed | cancelled
      ▲  │                │
      │  └─request_cancel─┼──▶ cancelled (a queued job ends at once; a running one stops at its next batch)
      └───────────────────┘ requeue_interrupted (SIGTERM, a stop after the last backup), expire_leases (a
                            worker that stopped renewing its lease; or the job ends cancelled / worker_lost)

A delivery claims the job (status running, `attempts` + 1, `worker_id`, `lease_expires_at`); the worker's
heartbeat renews the lease (workers/leases.py) and the reaper re-queues a job whose lease expired. Every
write an attempt makes is fenced on (worker_id, attempts, status running) by `fenced`, so a worker that lost
its lease (it stalled, the reaper gave the job to another worker) changes nothing any more.

A failed job always says why: `failure` is the only way to build a failed status, with a code from
trainyard/job_errors.py and a message naming the cause (the database refuses a failed job without both,
migration 0008). Stop reasons are `trainyard.stop_reasons.StopReason`.

tests/service/test_lifecycle_owner.py fails when any other module of trainyard/, service/ or workers/ writes
a job's status.

Whenever a job reaches a final status, in the same transaction (`settle_end`): if it is a fork
(trainyard/forks.py), each of its parent's findings that it applied gets `resolved_by`
(`settle_applied_findings`); if it is a replay, it gets its `reproduction`, its per-epoch metrics and
environment compared with the original's (`reproduction_of`, trainyard/compare.py).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from collections.abc import Callable
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session, object_session

from trainyard import compare
from trainyard.db import Database, aware, db_time
from trainyard.db.models import (FINAL_STATUSES, Checkpoint, EpochDiagnostics, EpochMetrics, Finding, Job, Tenant,
                                 utcnow)
from trainyard.job_errors import DIAGNOSIS_CODES, MAX_MESSAGE_CHARS, JobError
from trainyard.stop_reasons import StopReason

logger = logging.getLogger(__name__)

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = "queued", "running", "succeeded", "failed", "cancelled"


# --- how a job ends --------------------------------------------------------------------------------------------


def failure(code: JobError | str, message: str) -> dict[str, Any]:
    """The job row's values for ending it failed with `code` and `message` (raises on anything else)."""
    code = JobError(code)
    message = (message or "").strip()
    if not message:
        raise ValueError(f"a failed job needs a message naming the cause ({code})")
    return {"status": FAILED, "error_code": code.value, "error_message": message[:MAX_MESSAGE_CHARS]}


# Stop reasons that fail the job: the code and the message, which may use {epoch} (the epoch that diverged)
# and {error} (the trainer's one-line description of its exception).
FAILURES: dict[StopReason, tuple[JobError, str]] = {
    StopReason.NO_GRADIENTS: (
        JobError.NO_GRADIENTS,
        "Preflight found that no trainable variable gets a gradient, so nothing can learn; see the job's "
        "zero_gradients findings (the job's links.diagnostics) for the layers and the spec change to "
        "make (often a zero kernel_initializer or a final activation that cuts the gradient).",
    ),
    StopReason.NAN_LOSS: (
        JobError.NAN_LOSS,
        "The loss became NaN or infinite at epoch {epoch}; lower optimizer.learning_rate, set "
        "optimizer.clipnorm, or normalise the data (dataset.normalize: standardize).",
    ),
    StopReason.ERROR: (JobError.TRAINING_ERROR, "Training stopped with an error: {error}"),
}
NO_CHECKPOINT = (JobError.NO_CHECKPOINT,
                 "The run ended before any epoch finished, so there is no checkpoint; raise "
                 "limits.max_runtime_seconds or lower training.epochs' cost.")
WORKER_LOST_MESSAGE = (
    "The job's worker stopped without finishing it {attempts} times (killed, out of memory, or its "
    "machine went away); it is not retried again. Lower the memory the model needs (batch size, layer "
    "sizes) or look at the worker's logs."
)


def training_error(error: str) -> tuple[JobError, str]:
    """The code and message of a run whose trainer raised; `error` is its `describe_error` line."""
    code, template = FAILURES[StopReason.ERROR]
    return code, template.format(epoch=None, error=error)


def end_of_run(result: Any, last_epoch: int) -> dict[str, Any]:
    """The job row's status (and, for a failure, its error code and message) for a trainer result (its
    `stop_reason`, `best_epoch` and `error`); `last_epoch` is the last epoch it reported."""
    reason = StopReason.parse(result.stop_reason)
    if reason is not None and reason.ends_well:
        if result.best_epoch is None:
            return failure(*NO_CHECKPOINT)
        return {"status": SUCCEEDED}
    if reason is StopReason.CANCELLED:
        return {"status": CANCELLED}
    if reason is StopReason.DIAGNOSIS:
        # The code of the finding that stopped the run; the message is the trainer's (the finding's advice).
        code = getattr(result, "error_code", None)
        message = getattr(result, "error", None) or f"a {code} finding stopped the run"
        if code in DIAGNOSIS_CODES:
            return failure(code, message)
        return failure(JobError.TRAINING_ERROR, f"A diagnosis stopped the run with an unlisted code {code!r}: "
                                                f"{message}")
    code, template = FAILURES.get(reason, FAILURES[StopReason.ERROR])  # type: ignore[arg-type]
    error = getattr(result, "error", None) or f"the run ended with stop reason {result.stop_reason!r}"
    return failure(code, template.format(epoch=last_epoch + 1, error=error))


def _checked_end(end: dict[str, Any]) -> dict[str, Any]:
    """`end` as `end_of_run` or `failure` builds it; a failure without a listed code and a message raises."""
    status = end.get("status")
    if status == FAILED:
        checked = failure(end.get("error_code") or "", end.get("error_message") or "")
        if set(end) != set(checked):
            raise ValueError(f"unexpected values in a job's end: {sorted(set(end) - set(checked))}")
        return checked
    if status not in (SUCCEEDED, CANCELLED) or set(end) != {"status"}:
        raise ValueError(f"not a job's end: {end!r}")
    return {"status": status}


# --- a fork's end: the parent's findings it applied -----------------------------------------------------------


def settle_applied_findings(session: Session, job_id: str) -> None:
    """The job ended: if it is a fork that applied findings of its parent, mark each `resolved_by` it.

    A finding is resolved when the fork succeeded and has no finding of the same code (on any layer): the
    fix worked and did not just move the problem. A fork that failed or was cancelled resolves nothing. A
    later fork that did not resolve a finding never replaces one that did."""
    row = session.execute(select(Job.status, Job.parent_id, Job.parent_findings).where(Job.id == job_id)).first()
    if row is None or row.parent_id is None or not row.parent_findings or row.status not in FINAL_STATUSES:
        return
    codes: set[str] = set()
    if row.status == SUCCEEDED:
        codes = set(session.execute(select(Finding.code).where(Finding.job_id == job_id)).scalars())
    for finding_id in row.parent_findings:
        code, _, layer = str(finding_id).partition(":")
        resolved = row.status == SUCCEEDED and code not in codes
        stmt = update(Finding).where(Finding.job_id == row.parent_id, Finding.code == code,
                                     Finding.layer == ("" if layer == "-" else layer))
        if not resolved:
            stmt = stmt.where(or_(Finding.resolved.is_(None), Finding.resolved.is_(False)))
        session.execute(stmt.values(resolved_by_job_id=job_id, resolved=resolved))


# --- a replay's end: its reproduction ------------------------------------------------------------------------


def reproduction_of(session: Session, job_id: str, replay_of: str, environment: dict[str, Any] | None
                    ) -> dict[str, Any] | None:
    """The replay `job_id`'s reproduction: its epochs against those of `replay_of`, the job it replays (two
    queries, whatever the number of epochs). None when that job was deleted: there is nothing to compare."""
    original = session.execute(select(Job.environment).where(Job.id == replay_of)).first()
    if original is None:
        return None
    runs = compare.load_epochs(session, [replay_of, job_id])
    return compare.reproduction(runs[replay_of], runs[job_id], original.environment, environment)


def settle_end(session: Session, job_id: str) -> None:
    """The job `job_id` was just ended with a Core update in `session`: what its end settles (see above)."""
    settle_applied_findings(session, job_id)
    row = session.execute(select(Job.status, Job.replay_of, Job.environment).where(Job.id == job_id)).first()
    if row is not None and row.replay_of is not None and row.status in FINAL_STATUSES:
        session.execute(update(Job).where(Job.id == job_id)
                        .values(reproduction=reproduction_of(session, job_id, row.replay_of, row.environment)))


def _settle(job: Job) -> None:
    """`settle_end` for a job ended through its ORM row."""
    session = object_session(job)
    if session is None or (job.parent_id is None and job.replay_of is None):
        return
    session.flush()
    if job.parent_id is not None:
        settle_applied_findings(session, job.id)
    if job.replay_of is not None:
        job.reproduction = reproduction_of(session, job.id, job.replay_of, job.environment)


# --- fencing ---------------------------------------------------------------------------------------------------


def fenced(job_id: str, worker_id: str | None, attempt: int | None, *, running: bool = True) -> Any:
    """The WHERE clause only the current lease holder's writes satisfy; `running=False` for a correction
    right after the holder recorded the job's end (no other attempt has claimed it since)."""
    clause = (Job.id == job_id) & (Job.worker_id == worker_id) & (Job.attempts == attempt)
    return clause & (Job.status == RUNNING) if running else clause


def hold(session: Session, job_id: str, worker_id: str | None, attempt: int | None) -> bool:
    """Lock the job's row if this attempt still holds it; the lock orders the caller's writes against the
    reaper re-queueing the job and a new claim of it."""
    return session.execute(
        select(Job.id).where(fenced(job_id, worker_id, attempt)).with_for_update()
    ).first() is not None


# --- queued -----------------------------------------------------------------------------------------------------


def queued_job(**fields: Any) -> Job:
    """A new job's row, queued (trainyard/submission.py commits it, then sends its message)."""
    return Job(status=QUEUED, **fields)


def request_cancel(job: Job) -> None:
    """Cancel `job` (its row, locked or about to be committed by the caller). A queued job is final at once
    (the worker that later receives its message skips it); a running one stops at its next batch and its
    attempt ends it (`end_run`, `end_cancelled`), or the reaper does when its worker is gone."""
    job.cancel_requested = True
    if job.status == QUEUED:
        job.status = CANCELLED
        job.stop_reason = StopReason.CANCELLED.value
        job.finished_at = utcnow()
        _settle(job)


# --- running ----------------------------------------------------------------------------------------------------


@dataclass
class Claim:
    job_id: str
    attempt: int
    spec: dict[str, Any]
    backup_key: str | None
    backup_epoch: int | None
    resume_state: dict[str, Any] | None
    best_epoch: int | None
    best_value: float | None
    best_checkpoint_key: str | None
    # A fork's starting weights (trainyard/forks.py), used when there is no backup to resume from.
    initial_weights_key: str | None = None


def _fail_worker_lost(job: Job) -> None:
    for key, value in failure(JobError.WORKER_LOST,
                              WORKER_LOST_MESSAGE.format(attempts=job.attempts - job.interruptions)).items():
        setattr(job, key, value)
    job.stop_reason = StopReason.ERROR.value
    job.finished_at = utcnow()
    job.lease_expires_at = None
    _settle(job)


def _cancel_now(job: Job, now: datetime) -> None:
    job.status, job.stop_reason, job.finished_at = CANCELLED, StopReason.CANCELLED.value, now
    job.lease_expires_at = None
    _settle(job)


def _tenant_at_running_limit(db: Database, s: Session, job: Job, max_running: int, now: datetime) -> bool:
    # The tenant's row is locked so two workers cannot both start the tenant's last allowed job.
    s.execute(select(Tenant.id).where(Tenant.id == job.tenant_id).with_for_update())
    running = s.execute(
        select(func.count()).select_from(Job).where(
            Job.tenant_id == job.tenant_id, Job.id != job.id, Job.status == RUNNING,
            Job.lease_expires_at > db_time(db, now))
    ).scalar_one()
    return running >= max_running


def claim(db: Database, job_id: str, worker_id: str, lease_for: float,
          max_running_per_tenant: int | None = None,
          environment: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> Claim | None:
    """Take the job's lease and move it to running; None when this delivery must not train.

    A job already final, or running under another worker's live lease, is left alone; a cancelled one ends
    cancelled, one whose attempts are used up fails (worker_lost). With `max_running_per_tenant`, a job
    whose tenant already trains that many jobs is deferred: it stays queued with its outbox marker cleared,
    so the reaper sends it again a heartbeat later, behind the other tenants' messages. `environment`
    makes the attempt's reproducibility record from the job's spec (workers/environment.py).
    """
    now = utcnow()
    with db.session() as s:
        job = s.get(Job, job_id, with_for_update=True)
        if job is None:
            logger.warning("job %s does not exist (deleted?); dropping its message", job_id)
            return None
        if job.status in FINAL_STATUSES:
            logger.info("job %s is already %s; nothing to do", job_id, job.status)
            return None
        lease = aware(job.lease_expires_at)
        if job.status == RUNNING and lease is not None and lease > now and job.worker_id != worker_id:
            logger.info("job %s is running on %s (lease until %s); dropping this delivery",
                        job_id, job.worker_id, lease.isoformat())
            return None
        if job.cancel_requested:
            _cancel_now(job, now)
            return None
        if job.attempts - job.interruptions >= job.max_attempts:
            _fail_worker_lost(job)
            logger.warning("job %s: %d attempts died; failing it", job_id, job.attempts - job.interruptions)
            return None
        if (max_running_per_tenant is not None and job.status == QUEUED
                and _tenant_at_running_limit(db, s, job, max_running_per_tenant, now)):
            job.enqueued_at = None
            logger.info("job %s: its tenant already runs %d jobs; deferred", job_id, max_running_per_tenant)
            return None
        # Checkpoints are stored by attempts only: a job never claimed before has none to look up.
        first_attempt = job.attempts == 0
        job.status = RUNNING
        job.started_at = job.started_at or now
        job.attempts += 1
        job.worker_id = worker_id
        job.heartbeat_at = now
        job.lease_expires_at = now + timedelta(seconds=lease_for)
        if environment is not None:
            job.environment = environment(job.spec)
        if job.backup_key is not None and job.backup_epoch is not None:
            # The new attempt re-runs every epoch after the backup: rows of the lost attempt past it go,
            # so the metrics and diagnostics stay one row per epoch of the run that counts.
            for table in (EpochMetrics, EpochDiagnostics):
                s.execute(delete(table).where(table.job_id == job_id, table.epoch > job.backup_epoch))
            job.epoch = job.backup_epoch
        best_key = None if first_attempt else s.execute(
            select(Checkpoint.artifact_key).where(Checkpoint.job_id == job_id, Checkpoint.is_best.is_(True))
        ).scalar_one_or_none()
        return Claim(job_id=job_id, attempt=job.attempts, spec=job.spec, backup_key=job.backup_key,
                     backup_epoch=job.backup_epoch, resume_state=job.resume_state, best_epoch=job.best_epoch,
                     best_value=job.best_value, best_checkpoint_key=best_key,
                     initial_weights_key=job.initial_weights_key)


# --- an attempt's end (each fenced on the attempt still holding the job) ---------------------------------------


def end_run(session: Session, job_id: str, worker_id: str | None, attempt: int | None, end: dict[str, Any],
            *, stop_reason: str, **fields: Any) -> Job | None:
    """Record the end of an attempt's run in `session`: `end` (from `end_of_run` or `failure`), its stop
    reason, `finished_at` and the result's `fields` (test metrics, best monitor...). Returns the job, locked,
    or None when the attempt no longer holds it (then nothing is written)."""
    # A plain string in the row (the trainer may hand a StopReason); an unknown reason is kept as it came.
    reason = StopReason.parse(stop_reason)
    values = {**_checked_end(end), "stop_reason": reason.value if reason is not None else stop_reason,
              "finished_at": utcnow(), **fields}
    if not {"status", "error_code", "error_message"}.isdisjoint(fields):
        raise ValueError("a job's status and error come from `end` only")
    job = session.execute(select(Job).where(fenced(job_id, worker_id, attempt)).with_for_update()).scalar_one_or_none()
    if job is None:
        return None
    for key, value in values.items():
        setattr(job, key, value)
    _settle(job)
    return job


def fail_attempt(db: Database, job_id: str, worker_id: str, attempt: int, code: JobError | str,
                 message: str) -> bool:
    """The attempt failed outside the trainer's own end report (the data set, the worker). Fenced on the
    attempt still running: when the trainer already recorded the job's end (its own failure, with its code),
    that record stands and this writes nothing."""
    values = failure(code, message)
    with db.session() as s:
        result = s.execute(update(Job).where(fenced(job_id, worker_id, attempt))
                           .values(**values, stop_reason=func.coalesce(Job.stop_reason, StopReason.ERROR.value),
                                   finished_at=utcnow()))
        if result.rowcount == 1:
            settle_end(s, job_id)
        return result.rowcount == 1


def end_cancelled(db: Database, job_id: str, worker_id: str, attempt: int) -> bool:
    """A cancelled attempt that stopped before the trainer could record its end (interrupted in a phase, or
    stuck in one): the job ends cancelled. Its best checkpoint, if it stored one, stays the job's best."""
    with db.session() as s:
        result = s.execute(
            update(Job).where(fenced(job_id, worker_id, attempt))
            .values(status=CANCELLED, stop_reason=StopReason.CANCELLED.value, finished_at=utcnow(),
                    lease_expires_at=None)
        )
        if result.rowcount == 1:
            settle_end(s, job_id)
        return result.rowcount == 1


# --- back to queued --------------------------------------------------------------------------------------------


def requeue_interrupted(db: Database, job_id: str, worker_id: str, attempt: int) -> bool:
    """A graceful stop (SIGTERM): back to queued, counted as an interruption rather than a failed attempt;
    the caller sends the job's message again (its outbox marker is cleared, so the reaper would too)."""
    with db.session() as s:
        result = s.execute(
            update(Job).where(fenced(job_id, worker_id, attempt))
            .values(status=QUEUED, interruptions=Job.interruptions + 1, worker_id=None,
                    lease_expires_at=None, enqueued_at=None)
        )
        return result.rowcount == 1


def expire_leases(db: Database, limit: int = 100) -> list[str]:
    """Running jobs whose lease expired (their worker stopped renewing it): re-queue each (outbox marker
    cleared), or end it cancelled when it was cancelled, or failed (worker_lost) when its attempts are used
    up. Returns the ids re-queued, for the caller to send. Several reapers may run this at once: each locks
    the rows it takes and skips the ones another holds."""
    now = utcnow()
    requeued: list[str] = []
    with db.session() as s:
        stmt = (select(Job).where(Job.status == RUNNING, Job.lease_expires_at < db_time(db, now))
                .limit(limit).with_for_update(skip_locked=True))
        for job in s.execute(stmt).scalars():
            if job.cancel_requested:
                _cancel_now(job, now)
                logger.info("job %s: worker %s is gone and the job was cancelled", job.id, job.worker_id,
                            extra={"job_id": job.id})
            elif job.attempts - job.interruptions >= job.max_attempts:
                _fail_worker_lost(job)
                logger.warning("job %s: worker %s is gone after the last allowed attempt; failed",
                               job.id, job.worker_id, extra={"job_id": job.id})
            else:
                logger.warning("job %s: lease of worker %s expired (attempt %d); re-queueing",
                               job.id, job.worker_id, job.attempts, extra={"job_id": job.id})
                job.status, job.worker_id, job.lease_expires_at, job.enqueued_at = QUEUED, None, None, None
                requeued.append(job.id)
    return requeued
