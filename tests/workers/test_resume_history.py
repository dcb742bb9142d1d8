"""A new attempt resumes with the run's diagnostics history up to its backup, and nothing of the lost
attempt past it: real Postgres, the rows as a worker's reporter writes them."""
from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from trainyard.db.models import EpochDiagnostics, EpochMetrics, Job, utcnow
from trainyard import lifecycle
from workers.resumable import LeasedReporter, prepare_resume


def _record(epoch: int) -> dict[str, Any]:
    return {"learning_rate": 0.01 / epoch, "loss": 1.0 / epoch, "variables": [
        {"layer": "dense", "name": "kernel", "grad_norm": 0.5 / epoch, "weight_norm": 2.0,
         "update_norm": 0.01, "update_ratio": 0.005, "zero_grad_fraction": 0.0}]}


def test_a_resumed_attempt_gets_the_diagnostics_history_up_to_its_backup(app: Any, job_id: str,
                                                                          tmp_path: Path) -> None:
    svc = app.extensions["trainyard"]
    first = lifecycle.claim(svc.db, job_id, "worker-a", lease_for=60)
    reporter = LeasedReporter(svc.db, svc.store, job_id, worker_id="worker-a", attempt=first.attempt,
                              retries=1, shutting_down=threading.Event(), lease_lost=threading.Event())
    backup = tmp_path / "backup.weights.h5"
    backup.write_bytes(b"weights")
    for epoch in (1, 2, 3, 4):
        reporter.epoch_end(epoch, {"loss": 1.0 / epoch, "val_loss": 2.0 / epoch})
        reporter.diagnostics(epoch, _record(epoch))
        if epoch <= 3:  # the worker dies after epoch 4's rows but before epoch 4's backup
            reporter.backup_saved(epoch, str(backup), {"epoch": epoch, "callbacks": {}})

    with svc.db.session() as s:  # its lease runs out
        s.execute(update(Job).where(Job.id == job_id).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
    second = lifecycle.claim(svc.db, job_id, "worker-b", lease_for=60)
    assert second is not None and second.attempt == first.attempt + 1 and second.backup_epoch == 3
    with svc.db.session() as s:
        # Epoch 4 will be trained again: the lost attempt's rows of it are gone, metrics and diagnostics.
        assert s.execute(select(EpochDiagnostics.epoch).where(EpochDiagnostics.job_id == job_id)
                         .order_by(EpochDiagnostics.epoch)).scalars().all() == [1, 2, 3]
        assert s.get(EpochMetrics, (job_id, 4)) is None

    resume = prepare_resume(svc.db, svc.store, second, str(tmp_path / "work"))
    assert resume is not None and resume.epoch == 3
    assert [r["epoch"] for r in resume.diagnostics_history] == [1, 2, 3]
    for record in resume.diagnostics_history:
        epoch = record["epoch"]
        assert record == {"epoch": epoch, **_record(epoch), "val_loss": 2.0 / epoch}
