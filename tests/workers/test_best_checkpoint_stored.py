"""A job never ends succeeded unless its best checkpoint's bytes, read back from the artifact store, match
the recorded sha256 (README, Guarantees), in the default store: the bytes are chunk rows in Postgres.

The damage is done from outside, as a fault of the database's disk would: a chunk's bytes changed, a chunk
row lost, the artifact's record lost. The attempt's end is recorded by a real `LeasedReporter`, as the
worker records it; tests/service/test_guarantees.py does the same through real workers and a folder store.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select

from service.db.models import Artifact, ArtifactChunk, Job
from service.store import checkpoint_key, holds
from tests.workers.test_fencing import _file, _reporter, _result
from workers import leases
from workers.resumable import LeasedReporter


def _damage(db: Any, key: str, fault: str) -> None:
    with db.session() as s:
        if fault == "chunk changed":
            chunk = s.execute(select(ArtifactChunk).where(ArtifactChunk.key == key, ArtifactChunk.seq == 0)).scalar_one()
            data = bytearray(chunk.data)
            data[len(data) // 2] ^= 0xFF
            chunk.data = bytes(data)
        elif fault == "chunk lost":
            s.execute(delete(ArtifactChunk).where(ArtifactChunk.key == key))
        else:
            s.execute(delete(Artifact).where(Artifact.key == key))


FAULTS = ["chunk changed", "chunk lost", "record lost"]


def _damaged_best(app: Any, job_id: str, tmp_path: Path, fault: str) -> tuple[LeasedReporter, str, str, str]:
    """Attempt 1 stores its best checkpoint of epoch 1; then the store's disk damages it. Returns the
    attempt's reporter, the worker's copy of the file, its sha256 and its key in the store."""
    svc = app.extensions["trainyard"]
    assert leases.claim(svc.db, job_id, "worker-a", lease_for=60) is not None
    reporter = _reporter(app, job_id, "worker-a", 1)
    path, size, sha = _file(tmp_path, "best.keras")
    reporter.checkpoint_saved(1, "val_loss", 0.5, path, size, sha)
    key = checkpoint_key(job_id, 1, 1)
    assert holds(svc.store, key, sha)
    _damage(svc.db, key, fault)
    return reporter, path, sha, key


@pytest.mark.parametrize("fault", FAULTS)
def test_a_damaged_best_checkpoint_without_a_copy_fails_the_job(app: Any, job_id: str, tmp_path: Path,
                                                                 fault: str) -> None:
    svc = app.extensions["trainyard"]
    reporter, _, _, _ = _damaged_best(app, job_id, tmp_path, fault)
    # A resumed attempt whose download of the earlier best failed has no file of its own to store again.
    reporter.finished(_result(best_epoch=1, best_value=0.5, best_checkpoint=None))
    with svc.db.session() as s:
        job = s.get(Job, job_id)
        assert (job.status, job.stop_reason, job.error_code) == ("failed", "error", "checkpoint_unavailable")
        assert "epoch 1" in job.error_message and "sha256" in job.error_message


@pytest.mark.parametrize("fault", FAULTS)
def test_a_damaged_best_checkpoint_is_stored_again_from_the_workers_copy(app: Any, job_id: str, tmp_path: Path,
                                                                          fault: str) -> None:
    svc = app.extensions["trainyard"]
    reporter, path, sha, key = _damaged_best(app, job_id, tmp_path, fault)
    reporter.finished(_result(best_epoch=1, best_value=0.5, best_checkpoint=path))
    with svc.db.session() as s:
        job = s.get(Job, job_id)
        assert (job.status, job.error_code) == ("succeeded", None)
    assert holds(svc.store, key, sha)
    assert b"".join(svc.store.iter_bytes(key)) == Path(path).read_bytes()
