"""A job never ends succeeded unless its best checkpoint's bytes, read back from the artifact store, match
the recorded sha256 (README, Guarantees): in the default store (chunk rows in Postgres) and in a folder.

The damage is done from outside, as a failing disk would: a chunk's or a file's bytes changed, a chunk row
or a file lost, the artifact's record lost. The attempt's end is recorded by a real `LeasedReporter`, as
the worker records it; tests/service/test_guarantees.py does it through real workers and a folder store.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select

from trainyard.db.models import Artifact, ArtifactChunk, Job
from trainyard.store import ArtifactMissing, ArtifactStore, FsspecStore, checkpoint_key, download_to, holds
from tests.workers.test_fencing import _file, _result
from trainyard import lifecycle
from workers.resumable import LeasedReporter

# (store, what the disk did to the best checkpoint)
FAULTS = [("db", "bytes changed"), ("db", "chunk lost"), ("db", "record lost"),
          ("folder", "bytes changed"), ("folder", "file lost"), ("folder", "record lost")]


def _flip_a_byte(data: bytes) -> bytes:
    changed = bytearray(data)
    changed[len(changed) // 2] ^= 0xFF  # same size: only the sha256 can tell
    return bytes(changed)


def _damage(db: Any, store: ArtifactStore, key: str, fault: str) -> None:
    if isinstance(store, FsspecStore) and fault != "record lost":
        file = Path(f"{store.root}/{key}")
        if fault == "bytes changed":
            file.write_bytes(_flip_a_byte(file.read_bytes()))
        else:
            file.unlink()
        return
    with db.session() as s:
        if fault == "record lost":
            s.execute(delete(Artifact).where(Artifact.key == key))
        elif fault == "bytes changed":
            chunk = s.execute(select(ArtifactChunk).where(ArtifactChunk.key == key, ArtifactChunk.seq == 0)).scalar_one()
            chunk.data = _flip_a_byte(chunk.data)
        else:
            s.execute(delete(ArtifactChunk).where(ArtifactChunk.key == key))


def _damaged_best(app: Any, job_id: str, tmp_path: Path, kind: str, fault: str) -> tuple[LeasedReporter, str, str, str]:
    """Attempt 1 stores its best checkpoint of epoch 1; then the store's disk damages it. Returns the
    attempt's reporter, the worker's copy of the file, its sha256 and its key in the store."""
    svc = app.extensions["trainyard"]
    store = svc.store if kind == "db" else FsspecStore(svc.db, f"file://{tmp_path}/artifacts")
    assert lifecycle.claim(svc.db, job_id, "worker-a", lease_for=60) is not None
    reporter = LeasedReporter(svc.db, store, job_id, worker_id="worker-a", attempt=1, retries=1,
                              shutting_down=threading.Event(), lease_lost=threading.Event())
    path, size, sha = _file(tmp_path, "best.keras")
    reporter.checkpoint_saved(1, "val_loss", 0.5, path, size, sha)
    key = checkpoint_key(job_id, 1, 1)
    assert holds(store, key, sha)
    _damage(svc.db, store, key, fault)
    return reporter, path, sha, key


@pytest.mark.parametrize(("kind", "fault"), FAULTS)
def test_a_damaged_best_checkpoint_without_a_copy_fails_the_job(app: Any, job_id: str, tmp_path: Path,
                                                                 kind: str, fault: str) -> None:
    svc = app.extensions["trainyard"]
    reporter, _, _, key = _damaged_best(app, job_id, tmp_path, kind, fault)
    # What a resumed attempt meets: its download of the earlier best fails as missing (and it goes on)...
    with pytest.raises(ArtifactMissing):
        download_to(reporter.store, key, tmp_path / "resume.keras")
    # ... so it has no file of its own to store again when the run ends.
    reporter.finished(_result(best_epoch=1, best_value=0.5, best_checkpoint=None))
    with svc.db.session() as s:
        job = s.get(Job, job_id)
        assert (job.status, job.stop_reason, job.error_code) == ("failed", "error", "checkpoint_unavailable")
        assert "epoch 1" in job.error_message and "sha256" in job.error_message


@pytest.mark.parametrize(("kind", "fault"), FAULTS)
def test_a_damaged_best_checkpoint_is_stored_again_from_the_workers_copy(app: Any, job_id: str, tmp_path: Path,
                                                                          kind: str, fault: str) -> None:
    svc = app.extensions["trainyard"]
    reporter, path, sha, key = _damaged_best(app, job_id, tmp_path, kind, fault)
    reporter.finished(_result(best_epoch=1, best_value=0.5, best_checkpoint=path))
    with svc.db.session() as s:
        job = s.get(Job, job_id)
        assert (job.status, job.error_code) == ("succeeded", None)
    assert holds(reporter.store, key, sha)
    assert b"".join(reporter.store.iter_bytes(key)) == Path(path).read_bytes()
