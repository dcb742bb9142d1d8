"""What a succeeded job keeps (trainyard/retention.py), one level below the end-to-end test
(tests/service/test_retention_usage_e2e.py): pruning keeps the best checkpoint, is safe to repeat and to
resume after a crash, touches nothing of a job that has not succeeded, and survives a store that cannot
delete some bytes. Real Postgres, the session's database store and a folder store; the attempt's writes
are a real `LeasedReporter`'s, as the worker makes them.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.workers.test_fencing import _file, _result
from trainyard import lifecycle
from trainyard.db.models import ArtifactChunk, Checkpoint, Job
from trainyard.retention import Pruned, prune_succeeded
from trainyard.store import ArtifactStore, FsspecStore, backup_key, checkpoint_key, holds
from workers.resumable import LeasedReporter

VALUES = {1: 0.9, 2: 0.5, 3: 0.3}  # every epoch improves: three checkpoints, the last one best


def _trained(app: Any, job_id: str, tmp_path: Path, store: ArtifactStore) -> tuple[LeasedReporter, dict[int, str]]:
    """Attempt 1 stores a checkpoint and a backup per epoch, as a run of three improving epochs does;
    returns its reporter and each checkpoint's sha256."""
    svc = app.extensions["trainyard"]
    assert lifecycle.claim(svc.db, job_id, "worker-a", lease_for=60) is not None
    reporter = LeasedReporter(svc.db, store, job_id, worker_id="worker-a", attempt=1, retries=1,
                              shutting_down=threading.Event(), lease_lost=threading.Event())
    shas = {}
    for epoch, value in VALUES.items():
        path, size, shas[epoch] = _file(tmp_path, f"epoch{epoch}.keras")
        reporter.checkpoint_saved(epoch, "val_loss", value, path, size, shas[epoch])
        backup, _, _ = _file(tmp_path, f"backup{epoch}.weights.h5")
        reporter.backup_saved(epoch, backup, {"epoch": epoch, "callbacks": {}})
    return reporter, shas


def _kept(app: Any, job_id: str) -> tuple[list[int], str | None]:
    with app.extensions["trainyard"].db.session() as s:
        epochs = list(s.execute(select(Checkpoint.epoch).where(Checkpoint.job_id == job_id)
                                .order_by(Checkpoint.epoch)).scalars())
        return epochs, s.get(Job, job_id).backup_key


def _store(app: Any, kind: str, tmp_path: Path) -> ArtifactStore:
    svc = app.extensions["trainyard"]
    return svc.store if kind == "db" else FsspecStore(svc.db, f"file://{tmp_path}/artifacts")


def _bytes_gone(app: Any, store: ArtifactStore, key: str) -> bool:
    if isinstance(store, FsspecStore):
        return not Path(f"{store.root}/{key}").exists() and store.stat(key) is None
    with app.extensions["trainyard"].db.session() as s:
        chunks = s.execute(select(ArtifactChunk.seq).where(ArtifactChunk.key == key)).all()
    return chunks == [] and store.stat(key) is None


@pytest.mark.parametrize("kind", ["db", "folder"])
def test_pruning_keeps_the_best_and_is_safe_to_repeat(app: Any, job_id: str, tmp_path: Path, kind: str) -> None:
    svc = app.extensions["trainyard"]
    store = _store(app, kind, tmp_path)
    reporter, shas = _trained(app, job_id, tmp_path, store)
    # Still running: nothing is touched.
    assert prune_succeeded(svc.db, store, job_id) is None
    assert _kept(app, job_id) == ([1, 2, 3], backup_key(job_id, 3, 1))

    reporter.finished(_result(epochs_run=3, best_epoch=3, best_value=VALUES[3]))
    # A pass that crashed after deleting the first checkpoint's bytes, before any row: the next pass (a
    # redelivered message) finds the row and finishes the job.
    store.delete(checkpoint_key(job_id, 1, 1))
    assert prune_succeeded(svc.db, store, job_id) == Pruned(epochs=[1, 2], backup=True, left_in_store=[])
    assert _kept(app, job_id) == ([3], None)
    for key in (checkpoint_key(job_id, 1, 1), checkpoint_key(job_id, 2, 1), backup_key(job_id, 3, 1)):
        assert _bytes_gone(app, store, key), key
    assert holds(store, checkpoint_key(job_id, 3, 1), shas[3])

    # Again: nothing left to delete, and the best stays.
    assert prune_succeeded(svc.db, store, job_id) == Pruned()
    assert _kept(app, job_id) == ([3], None)
    assert holds(store, checkpoint_key(job_id, 3, 1), shas[3])
    with svc.db.session() as s:
        assert s.get(Job, job_id).status == "succeeded"


def test_a_job_that_did_not_succeed_keeps_everything(app: Any, job_id: str, tmp_path: Path) -> None:
    svc = app.extensions["trainyard"]
    reporter, _ = _trained(app, job_id, tmp_path, svc.store)
    reporter.finished(_result(stop_reason="cancelled", epochs_run=3, best_epoch=3, best_value=VALUES[3]))
    with svc.db.session() as s:
        assert s.get(Job, job_id).status == "cancelled"
    assert prune_succeeded(svc.db, svc.store, job_id) is None
    assert _kept(app, job_id) == ([1, 2, 3], backup_key(job_id, 3, 1))
    assert all(svc.store.stat(checkpoint_key(job_id, e, 1)) is not None for e in VALUES)


def test_bytes_the_store_cannot_delete_are_left_and_logged(app: Any, job_id: str, tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    svc = app.extensions["trainyard"]
    store = _store(app, "folder", tmp_path)
    reporter, shas = _trained(app, job_id, tmp_path, store)
    reporter.finished(_result(epochs_run=3, best_epoch=3, best_value=VALUES[3]))
    # The disk holds a folder where epoch 2's file was: the store cannot delete it (not recursively).
    stuck = checkpoint_key(job_id, 2, 1)
    file = Path(f"{store.root}/{stuck}")
    file.unlink()
    (file / "inside").mkdir(parents=True)
    with caplog.at_level(logging.WARNING, logger="trainyard.retention"):
        pruned = prune_succeeded(svc.db, store, job_id)
    assert pruned == Pruned(epochs=[1, 2], backup=True, left_in_store=[stuck])
    assert any(stuck in r.getMessage() for r in caplog.records)
    # The rows went (nothing lists a checkpoint that may be half gone); the rest was deleted; the job and
    # its best are untouched.
    assert _kept(app, job_id) == ([3], None)
    assert file.exists()
    assert _bytes_gone(app, store, checkpoint_key(job_id, 1, 1)) and _bytes_gone(app, store, backup_key(job_id, 3, 1))
    assert holds(store, checkpoint_key(job_id, 3, 1), shas[3])
    with svc.db.session() as s:
        assert s.get(Job, job_id).status == "succeeded"


def test_the_setting_is_best_or_all_and_anything_else_stops_the_worker_at_start(tmp_path: Path) -> None:
    import subprocess

    from tests.conftest import ROOT, subprocess_env
    from trainyard.settings import Settings, SettingsError

    assert Settings.from_env({}).keep_checkpoints == "best"
    assert Settings.from_env({"TRAINYARD_KEEP_CHECKPOINTS": " All "}).keep_checkpoints == "all"
    with pytest.raises(SettingsError, match="TRAINYARD_KEEP_CHECKPOINTS must be one of best, all, got 'none'"):
        Settings.from_env({"TRAINYARD_KEEP_CHECKPOINTS": "none"})
    # bin/worker reads the settings before Celery starts: a typo never reaches a job.
    env = subprocess_env({"TRAINYARD_KEEP_CHECKPOINTS": "last", "TRAINYARD_VAR_DIR": str(tmp_path)})
    done = subprocess.run([str(ROOT / "bin" / "worker")], env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode != 0 and "TRAINYARD_KEEP_CHECKPOINTS must be one of best, all" in done.stderr
    assert "Traceback" not in done.stderr  # one line naming the setting, not Celery's loader traceback
