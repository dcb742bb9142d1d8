"""What makes an attempt resumable: the reporter that stores per-epoch backups under the job's lease, and
the preparation of a new attempt from the last backup.

`LeasedReporter` is `DbReporter` plus:
- every write is fenced: it locks the job's row where (worker_id, attempts, status running) are still this
  attempt's, and writes nothing (and sets `lease_lost`) when they are not; artifact keys carry the attempt,
  so a worker that lost the job can neither overwrite nor delete what its successor stored.
- `backup_saved`: the backup goes to the artifact store under a per-epoch key, then the job row points to
  it (`backup_key`, `backup_epoch`, `resume_state`) in one fenced transaction, then the previous backup is
  deleted; so the row always names a complete, verified backup.
- `should_stop` also answers "interrupted" when the worker is shutting down (SIGTERM) or lost the lease,
  and answers a stop the worker's watch thread requested (workers/interrupt.py) without asking the database.
- every write runs shielded from that thread's asynchronous interruption, so it completes or never starts;
  `started` (the end of setup) is a phase boundary where a requested stop takes effect.
- `finished` writes nothing for an interrupted run (the task re-queues it) or when the lease is gone, and
  never lets a job end succeeded unless its best checkpoint's bytes, read back from the store, match the
  recorded sha256.
"""
from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from trainyard import lifecycle
from trainyard.db import Database
from trainyard.db.models import Checkpoint, EpochDiagnostics, EpochMetrics, Job
from trainyard.job_errors import JobError
from trainyard.lifecycle import Claim, failure
from trainyard.stop_reasons import StopReason
from trainyard.store import ArtifactMissing, ArtifactStore, backup_key, download_to, holds, put_file
from workers.interrupt import Interrupter
from workers.reporting import DbReporter
from workers.trainer.types import ResumeState

logger = logging.getLogger(__name__)


def _sha256(path: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


class LeasedReporter(DbReporter):
    def __init__(self, db: Database, store: ArtifactStore, job_id: str, *, worker_id: str, attempt: int,
                 shutting_down: threading.Event, lease_lost: threading.Event,
                 interrupter: Interrupter | None = None, **kwargs: Any) -> None:
        super().__init__(db, store, job_id, **kwargs)
        self.worker_id = worker_id
        self.attempt = attempt
        self._shutting_down = shutting_down
        self._lease_lost = lease_lost
        self._interrupter = interrupter or Interrupter()

    def _retry(self, what: str, fn: Any) -> Any:
        with self._interrupter.shielded():
            return super()._retry(what, fn)

    def started(self, info: dict[str, Any]) -> None:
        super().started(info)
        self._interrupter.check()

    def _may_write(self, session: Any) -> bool:
        # The row lock orders this write against the reaper re-queueing the job and a new claim of it.
        held = lifecycle.hold(session, self.job_id, self.worker_id, self.attempt)
        if not held and not self._lease_lost.is_set():
            self._lease_lost.set()
            logger.error("job %s: attempt %d lost its lease; this worker writes nothing more for it",
                         self.job_id, self.attempt)
        return held

    def should_stop(self) -> str | None:
        if self._shutting_down.is_set() or self._lease_lost.is_set():
            return StopReason.INTERRUPTED.value
        return self._interrupter.reason or super().should_stop()

    def backup_saved(self, epoch: int, path: str, state: dict[str, Any]) -> None:
        key = backup_key(self.job_id, epoch, self.attempt)
        sha256 = _sha256(path)

        def write() -> None:
            meta = put_file(self.store, key, path)
            if meta.sha256 != sha256:
                raise OSError(f"backup of epoch {epoch} changed while it was stored")
            with self.db.session() as s:
                held = self._may_write(s)
                if held:
                    previous = s.execute(select(Job.backup_key).where(Job.id == self.job_id)).scalar_one()
                    s.execute(update(Job).where(Job.id == self.job_id)
                              .values(backup_key=key, backup_epoch=epoch, resume_state=state))
            if not held:
                self.store.delete(key)  # this attempt's own key: the successor's backups are untouched
                logger.error("job %s: lease lost; backup of epoch %d discarded", self.job_id, epoch)
                return
            if previous and previous != key:
                self.store.delete(previous)

        self._retry(f"storing epoch {epoch}'s backup", write)

    def _best_is_stored(self, epoch: int) -> bool:
        with self.db.session() as s:
            row = s.execute(
                select(Checkpoint).where(Checkpoint.job_id == self.job_id, Checkpoint.epoch == epoch)
            ).scalar_one_or_none()
        # Read back, not just looked up: a file lost or damaged on disk since it was stored still has its record.
        return row is not None and holds(self.store, row.artifact_key, row.sha256)

    def finished(self, result: Any) -> None:
        if result.stop_reason == StopReason.ERROR and self._interrupter.reason is not None:
            # Broken by the stop itself (an interruption some library turned into its own error): the
            # run ends for the stop's reason, never as a failure of the job.
            result.stop_reason = self._interrupter.reason
        if result.stop_reason == StopReason.INTERRUPTED:
            return
        if self._lease_lost.is_set():
            logger.error("job %s: lease lost; this worker does not record the end of the run", self.job_id)
            return
        epoch = result.best_epoch
        stored = self._checked_best_is_stored(epoch) if epoch is not None else True
        if stored is None:
            return
        if not stored:
            # The store was down when the checkpoint was saved: store it now, or do not claim success.
            if result.best_checkpoint and Path(result.best_checkpoint).exists():
                path = result.best_checkpoint
                self.checkpoint_saved(result.best_epoch, result.monitor, result.best_value, path,
                                      Path(path).stat().st_size, _sha256(path))
            stored = self._checked_best_is_stored(epoch)
            if stored is None:
                return
            if not stored:
                result.best_epoch = None
                result.stop_reason = StopReason.ERROR.value
                self._record_end(result, failure(
                    JobError.CHECKPOINT_UNAVAILABLE,
                    f"The best checkpoint (epoch {epoch}) could not be stored with its recorded sha256: it "
                    "is missing from the artifact store or its bytes no longer match, and this worker has no "
                    "copy to store again; the run is not usable. Submit the job again."))
                return
        super().finished(result)

    def _checked_best_is_stored(self, epoch: int) -> bool | None:
        """`_best_is_stored`, retried like every write; None when the database never answered (the end is
        then not recorded: the lease runs out and the reaper re-queues the job, as for a failed write)."""
        stored = self._retry(f"checking epoch {epoch}'s checkpoint is stored", lambda: self._best_is_stored(epoch))
        if stored is None:
            logger.error("job %s: could not check the best checkpoint; the end of the run is not recorded",
                         self.job_id)
        return stored


def diagnostics_history(db: Database, job_id: str, upto_epoch: int) -> list[dict[str, Any]]:
    """The diagnostics records of epochs 1..`upto_epoch` as the trainer made them, val_loss from the metrics."""
    with db.session() as s:
        rows = s.execute(
            select(EpochDiagnostics, EpochMetrics.values)
            .outerjoin(EpochMetrics, (EpochMetrics.job_id == EpochDiagnostics.job_id)
                       & (EpochMetrics.epoch == EpochDiagnostics.epoch))
            .where(EpochDiagnostics.job_id == job_id, EpochDiagnostics.epoch <= upto_epoch)
            .order_by(EpochDiagnostics.epoch)
        ).all()
    return [{"epoch": d.epoch, "learning_rate": d.learning_rate, "loss": d.loss,
             "val_loss": (values or {}).get("val_loss"), "variables": list(d.variables or [])}
            for d, values in rows]


def prepare_resume(db: Database, store: ArtifactStore, claim: Claim, workdir: str) -> ResumeState | None:
    """Download the claim's backup (and best checkpoint) into `workdir`, with the diagnostics history up to
    the backup; None to start from scratch."""
    if claim.backup_key is None or claim.backup_epoch is None or not claim.resume_state:
        return None
    backup = Path(workdir) / "resume" / "backup.weights.h5"
    backup.parent.mkdir(parents=True, exist_ok=True)
    try:
        download_to(store, claim.backup_key, backup)
    except ArtifactMissing:
        logger.warning("job %s: backup %s is missing or corrupt; starting from scratch", claim.job_id,
                       claim.backup_key)
        return None
    state = dict(claim.resume_state)
    callbacks = dict(state.get("callbacks") or {})
    best_path = None
    if claim.best_epoch is not None and claim.best_value is not None:
        # The database is the truth for the best so far: a checkpoint stored after this backup counts too.
        callbacks["checkpoint"] = {"best_epoch": claim.best_epoch, "best_value": claim.best_value}
        if claim.best_checkpoint_key:
            best_path = Path(workdir) / "resume" / "best.keras"
            try:
                download_to(store, claim.best_checkpoint_key, best_path)
            except ArtifactMissing:
                logger.warning("job %s: best checkpoint %s is unreadable", claim.job_id, claim.best_checkpoint_key)
                best_path = None
    state["callbacks"] = callbacks
    logger.info("job %s: resuming after epoch %d", claim.job_id, claim.backup_epoch)
    return ResumeState(str(backup), claim.backup_epoch, state, str(best_path) if best_path else None,
                       diagnostics_history(db, claim.job_id, claim.backup_epoch))
