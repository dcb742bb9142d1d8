"""A worker that lost its job's lease writes nothing more: not a metric, a checkpoint, a backup, a finding
nor the job's end, and it neither overwrites nor deletes what the attempt that replaced it stored.

Real Postgres and the session's artifact store; the two attempts are two `LeasedReporter`s, as two
workers would run them.
"""
from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from trainyard.db.models import Checkpoint, EpochDiagnostics, EpochMetrics, Finding, Job, utcnow
from trainyard.store import backup_key, checkpoint_key
from trainyard import lifecycle
from workers.resumable import LeasedReporter
from workers.trainer.types import TrainResult


def _reporter(app: Any, job_id: str, worker: str, attempt: int) -> LeasedReporter:
    svc = app.extensions["trainyard"]
    return LeasedReporter(svc.db, svc.store, job_id, worker_id=worker, attempt=attempt, retries=1,
                          shutting_down=threading.Event(), lease_lost=threading.Event())


def _take_over(app: Any, job_id: str, worker: str) -> int:
    """What the reaper and a second worker's claim do to the row once the first worker's lease ran out."""
    with app.extensions["trainyard"].db.session() as s:
        job = s.get(Job, job_id, with_for_update=True)
        job.attempts += 1
        job.worker_id, job.status, job.heartbeat_at = worker, "running", utcnow()
        return job.attempts


def _file(tmp_path: Path, name: str) -> tuple[str, int, str]:
    data = os.urandom(4096)
    path = tmp_path / name
    path.write_bytes(data)
    return str(path), len(data), hashlib.sha256(data).hexdigest()


def _result(**kw: Any) -> TrainResult:
    base = dict(stop_reason="completed", epochs_run=1, monitor="val_loss", best_epoch=1, best_value=0.1,
                best_checkpoint=None, test_metrics=None, normalization=None)
    return TrainResult(**{**base, **kw})


def _diag(loss: float) -> dict[str, Any]:
    return {"learning_rate": 0.01, "loss": loss, "variables": [
        {"layer": "dense", "name": "kernel", "grad_norm": loss, "weight_norm": 1.0, "update_norm": 0.1,
         "update_ratio": 0.1, "zero_grad_fraction": 0.0}]}


def test_a_worker_that_lost_the_lease_writes_nothing(app: Any, job_id: str, tmp_path: Path) -> None:
    svc = app.extensions["trainyard"]
    first = lifecycle.claim(svc.db, job_id, "worker-a", lease_for=60)
    assert first is not None and first.attempt == 1
    stale = _reporter(app, job_id, "worker-a", 1)
    stale.epoch_end(1, {"loss": 0.9})  # while it holds the lease, its writes land
    with svc.db.session() as s:
        assert s.get(EpochMetrics, (job_id, 1)).values["loss"] == 0.9

    attempt = _take_over(app, job_id, "worker-b")
    current = _reporter(app, job_id, "worker-b", attempt)
    current.epoch_end(1, {"loss": 0.5})
    current.diagnostics(1, _diag(0.5))
    path, size, sha = _file(tmp_path, "b.keras")
    current.checkpoint_saved(1, "val_loss", 0.5, path, size, sha)
    bpath, _, bsha = _file(tmp_path, "b.weights.h5")
    current.backup_saved(1, bpath, {"epoch": 1})
    with svc.db.session() as s:
        kept_backup = s.get(Job, job_id).backup_key
        best = s.execute(select(Checkpoint).where(Checkpoint.job_id == job_id)).scalar_one()
    assert best.artifact_key == checkpoint_key(job_id, 1, attempt)

    # The first worker has not noticed yet (its heartbeat would tell it a few seconds later) and goes on.
    spath, ssize, ssha = _file(tmp_path, "a.keras")
    stale.started({"params": 1})
    stale.epoch_end(1, {"loss": 9.9})
    stale.diagnostics(1, _diag(9.9))
    stale.findings([{"code": "plateau", "severity": "info", "message": "stale", "evidence": {}}])
    stale.checkpoint_saved(1, "val_loss", 0.01, spath, ssize, ssha)
    stale.backup_saved(1, spath, {"epoch": 1})
    stale.export_saved("savedmodel", 1, spath, ssize, ssha)
    stale.finished(_result(best_value=0.01))

    with svc.db.session() as s:
        job = s.get(Job, job_id)
        assert (job.status, job.worker_id, job.attempts) == ("running", "worker-b", attempt)
        assert job.model_info is None and job.best_value == 0.5 and job.backup_key == kept_backup
        assert s.get(EpochMetrics, (job_id, 1)).values["loss"] == 0.5
        assert s.get(EpochDiagnostics, (job_id, 1)).loss == 0.5
        assert s.execute(select(Finding).where(Finding.job_id == job_id)).first() is None
        rows = s.execute(select(Checkpoint).where(Checkpoint.job_id == job_id)).scalars().all()
        assert [(r.artifact_key, r.sha256, r.value) for r in rows] == [(checkpoint_key(job_id, 1, attempt), sha, 0.5)]
    # The successor's files are whole; the stale worker's own are gone, not left behind.
    assert svc.store.stat(checkpoint_key(job_id, 1, attempt)).sha256 == sha
    assert svc.store.stat(kept_backup).sha256 == bsha
    assert svc.store.stat(checkpoint_key(job_id, 1, 1)) is None
    assert svc.store.stat(backup_key(job_id, 1, 1)) is None
    # And it now knows: it stops at its next batch (LeasedReporter.should_stop answers "interrupted").
    assert stale._lease_lost.is_set() and not current._lease_lost.is_set()
    assert stale.should_stop() == "interrupted"


def test_a_new_attempt_replaces_the_lost_attempts_checkpoint_file(app: Any, job_id: str, tmp_path: Path) -> None:
    svc = app.extensions["trainyard"]
    assert lifecycle.claim(svc.db, job_id, "worker-a", lease_for=60) is not None
    path, size, sha = _file(tmp_path, "a.keras")
    _reporter(app, job_id, "worker-a", 1).checkpoint_saved(1, "val_loss", 0.7, path, size, sha)
    assert svc.store.stat(checkpoint_key(job_id, 1, 1)).sha256 == sha

    attempt = _take_over(app, job_id, "worker-b")
    path, size, sha = _file(tmp_path, "b.keras")
    _reporter(app, job_id, "worker-b", attempt).checkpoint_saved(1, "val_loss", 0.6, path, size, sha)
    with svc.db.session() as s:
        row = s.execute(select(Checkpoint).where(Checkpoint.job_id == job_id)).scalar_one()
    assert (row.artifact_key, row.sha256, row.is_best) == (checkpoint_key(job_id, 1, attempt), sha, True)
    assert svc.store.stat(checkpoint_key(job_id, 1, 1)) is None  # one file per checkpoint row, no orphans


def test_a_failure_is_recorded_only_by_the_attempt_that_holds_the_job(app: Any, job_id: str) -> None:
    svc = app.extensions["trainyard"]
    assert lifecycle.claim(svc.db, job_id, "worker-a", lease_for=60) is not None
    attempt = _take_over(app, job_id, "worker-b")
    stale = _reporter(app, job_id, "worker-a", 1)
    stale.finished(_result(stop_reason="nan_loss", best_epoch=None, best_value=None))
    with svc.db.session() as s:
        assert s.get(Job, job_id).status == "running"
        s.execute(update(Job).where(Job.id == job_id).values(worker_id="worker-a"))  # same worker, new attempt
    stale.finished(_result(stop_reason="nan_loss", best_epoch=None, best_value=None))
    with svc.db.session() as s:
        assert (s.get(Job, job_id).status, s.get(Job, job_id).attempts) == ("running", attempt)
    _reporter(app, job_id, "worker-a", attempt).finished(_result(stop_reason="nan_loss", best_epoch=None,
                                                                   best_value=None))
    with svc.db.session() as s:
        job = s.get(Job, job_id)
        assert (job.status, job.error_code) == ("failed", "nan_loss")
