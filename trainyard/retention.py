"""What a job keeps once it succeeded (`TRAINYARD_KEEP_CHECKPOINTS`).

`best` (the default): its best checkpoint and its exports (made from that checkpoint), nothing else; the
checkpoints of earlier improvements and the last resume backup are deleted, their rows and their bytes.
`all`: everything stays, as before this setting existed.

The worker prunes once the job is recorded succeeded, which happens after its exports are stored
(workers/tasks.py). Safe under at-least-once delivery: a redelivered message of a job that already
succeeded prunes again, which finds what a crash left and deletes it, or finds nothing. The bytes go first
and the rows after them, so a crash in between leaves rows that the next pass deletes (their bytes already
gone is not an error: deleting a missing artifact does nothing). A store that fails to delete some bytes
never fails the job: the failure is logged with the key and the rows still go, so nothing lists a checkpoint
that may be half gone.

Never deleted: the best checkpoint (the row marked best, and the job's `best_epoch` however it is marked),
exports, a fork's copy of its starting weights, and anything of a job that did not succeed (a failed or
cancelled job keeps everything for a fork from `last` or an epoch). A fork asking for a checkpoint or backup
that was pruned gets the 409 that names what the parent kept (trainyard/forks.py); forks made before the
pruning own a copy of their weights and lose nothing.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

from sqlalchemy import delete, select, update

from trainyard.db import Database
from trainyard.db.models import Checkpoint, Job
from trainyard.store import ArtifactStore

logger = logging.getLogger(__name__)

KEEP_BEST, KEEP_ALL = "best", "all"
KEEP_CHOICES = (KEEP_BEST, KEEP_ALL)


@dataclass
class Pruned:
    """What one pass deleted: the epochs of the checkpoints, whether the backup went, and the keys whose
    bytes the store failed to delete (their rows went anyway; the bytes are left for the operator)."""

    epochs: list[int] = field(default_factory=list)
    backup: bool = False
    left_in_store: list[str] = field(default_factory=list)


def prune_succeeded(db: Database, store: ArtifactStore, job_id: str) -> Pruned | None:
    """Delete a succeeded job's checkpoints other than its best and its resume backup; None when the job
    is not (or no longer) a succeeded one, or has no best checkpoint to keep (then nothing is touched)."""
    with db.session() as s:
        job = s.execute(select(Job.status, Job.best_epoch, Job.backup_key).where(Job.id == job_id)).first()
        if job is None or job.status != "succeeded":
            return None
        rows = s.execute(select(Checkpoint.epoch, Checkpoint.artifact_key, Checkpoint.is_best)
                         .where(Checkpoint.job_id == job_id)).all()
    best = [r for r in rows if r.is_best]
    if len(best) != 1 or best[0].epoch != job.best_epoch:
        # The rows do not agree on which checkpoint is the best: keep every one rather than guess.
        logger.warning("job %s: no single best checkpoint of epoch %s among its checkpoints; nothing pruned",
                       job_id, job.best_epoch)
        return None
    doomed = [r for r in rows if not r.is_best]
    pruned = Pruned()
    for row in doomed:
        _delete_bytes(store, job_id, row.artifact_key, pruned)
    if job.backup_key is not None:
        _delete_bytes(store, job_id, job.backup_key, pruned)
    with db.session() as s:
        if doomed:
            s.execute(delete(Checkpoint).where(Checkpoint.job_id == job_id,
                                               Checkpoint.epoch.in_([r.epoch for r in doomed]),
                                               Checkpoint.is_best.is_(False)))
        if job.backup_key is not None:
            # Only the backup read above: the row is final, so nothing replaced it since.
            result = s.execute(update(Job).where(Job.id == job_id, Job.backup_key == job.backup_key)
                               .values(backup_key=None, backup_epoch=None))
            pruned.backup = result.rowcount == 1
    pruned.epochs = sorted(r.epoch for r in doomed)
    if doomed or pruned.backup:
        logger.info("job %s succeeded: kept the best checkpoint (epoch %d); deleted %d other checkpoint(s)%s",
                    job_id, job.best_epoch, len(doomed), " and the resume backup" if pruned.backup else "")
    return pruned


def _delete_bytes(store: ArtifactStore, job_id: str, key: str, pruned: Pruned) -> None:
    try:
        store.delete(key)
    except Exception:
        pruned.left_in_store.append(key)
        logger.warning("job %s: could not delete %s from the artifact store; its record goes, its bytes are "
                       "left there", job_id, key, exc_info=True)
