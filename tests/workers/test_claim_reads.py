"""What a claim reads inside its transaction, which holds the job's row lock until the job is `running`
(issue #21: start latency): a job never claimed before has no checkpoint to look up, so its claim does
not read the checkpoints table; a later attempt still finds its best checkpoint to resume with."""
from __future__ import annotations

from typing import Any


from trainyard import lifecycle
from trainyard.db.models import Checkpoint
from tests.conftest import statements


def test_a_first_claim_reads_no_checkpoint_and_a_later_one_finds_its_best(app: Any, job_id: str) -> None:
    db = app.extensions["trainyard"].db
    with statements(db) as seen:
        first = lifecycle.claim(db, job_id, "worker-a", lease_for=60)
    assert first is not None and first.attempt == 1 and first.best_checkpoint_key is None
    assert not [s for s in seen if "checkpoints" in s], seen

    with db.session() as s:
        s.add(Checkpoint(job_id=job_id, epoch=1, artifact_key=f"checkpoints/{job_id}/1.keras", sha256="0" * 64,
                         size_bytes=1, monitor="loss", value=0.5, is_best=True))
    assert lifecycle.requeue_interrupted(db, job_id, "worker-a", 1)
    second = lifecycle.claim(db, job_id, "worker-b", lease_for=60)
    assert second is not None and second.attempt == 2
    assert second.best_checkpoint_key == f"checkpoints/{job_id}/1.keras"
