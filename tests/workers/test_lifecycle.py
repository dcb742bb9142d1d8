"""The job lifecycle's fencing on the session's real Postgres: only the attempt holding a job can end or
re-queue it, a stale attempt (another worker's, or this worker's earlier one) changes nothing, and a job
can never end failed without an error code and a message."""
from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from sqlalchemy import update

from trainyard import lifecycle
from trainyard.db.models import Job, utcnow
from trainyard.job_errors import JobError
from trainyard.stop_reasons import StopReason
from tests.conftest import ROOT


def _row(app: Any, job_id: str) -> Job:
    with app.extensions["trainyard"].db.session() as s:
        job = s.get(Job, job_id)
        s.expunge(job)
        return job


def _expire(db: Any, job_id: str) -> None:
    with db.session() as s:
        s.execute(update(Job).where(Job.id == job_id).values(lease_expires_at=utcnow() - timedelta(seconds=1)))


def _end(db: Any, job_id: str, worker: str, attempt: int, end: dict[str, Any], **fields: Any) -> bool:
    with db.session() as s:
        return lifecycle.end_run(s, job_id, worker, attempt, end, stop_reason=StopReason.COMPLETED,
                                 **fields) is not None


def _snapshot(job: Job) -> tuple[Any, ...]:
    return (job.status, job.worker_id, job.attempts, job.interruptions, job.stop_reason, job.error_code,
            job.finished_at)


def test_a_stale_attempt_can_neither_end_nor_requeue_the_job(app: Any, job_id: str) -> None:
    db = app.extensions["trainyard"].db
    first = lifecycle.claim(db, job_id, "worker-a", lease_for=60)
    assert first is not None and first.attempt == 1
    _expire(db, job_id)  # worker-a stalled past its lease: the reaper gives the job back to the queue
    assert lifecycle.expire_leases(db) == [job_id]
    assert _row(app, job_id).status == "queued"
    second = lifecycle.claim(db, job_id, "worker-b", lease_for=60)
    assert second is not None and second.attempt == 2
    before = _snapshot(_row(app, job_id))
    assert before[:4] == ("running", "worker-b", 2, 0)

    # worker-a wakes up and tries every end it could write: each is refused.
    assert not _end(db, job_id, "worker-a", 1, {"status": "succeeded"}, best_epoch=3)
    assert not lifecycle.fail_attempt(db, job_id, "worker-a", 1, JobError.WORKER_ERROR, "stale")
    assert not lifecycle.end_cancelled(db, job_id, "worker-a", 1)
    assert not lifecycle.requeue_interrupted(db, job_id, "worker-a", 1)
    # The right worker with the wrong attempt number, or the right number from the wrong worker: refused too.
    assert not _end(db, job_id, "worker-b", 1, {"status": "succeeded"})
    assert not lifecycle.requeue_interrupted(db, job_id, "worker-a", 2)
    with db.session() as s:
        assert not lifecycle.hold(s, job_id, "worker-a", 1)
        assert lifecycle.hold(s, job_id, "worker-b", 2)
    after = _row(app, job_id)
    assert _snapshot(after) == before and after.best_epoch is None

    # The holder re-queues it (a graceful stop): an interruption, not a failed attempt; once only.
    assert lifecycle.requeue_interrupted(db, job_id, "worker-b", 2)
    row = _row(app, job_id)
    assert (row.status, row.worker_id, row.lease_expires_at, row.enqueued_at, row.interruptions) == (
        "queued", None, None, None, 1)
    assert not lifecycle.requeue_interrupted(db, job_id, "worker-b", 2), "once"


def test_the_same_worker_s_earlier_attempt_cannot_finish_its_later_one(app: Any, job_id: str) -> None:
    db = app.extensions["trainyard"].db
    assert lifecycle.claim(db, job_id, "worker-a", lease_for=60).attempt == 1
    assert lifecycle.requeue_interrupted(db, job_id, "worker-a", 1)
    assert lifecycle.claim(db, job_id, "worker-a", lease_for=60).attempt == 2
    assert not _end(db, job_id, "worker-a", 1, lifecycle.failure(JobError.NAN_LOSS, "stale attempt"))
    assert _row(app, job_id).status == "running"
    assert _end(db, job_id, "worker-a", 2, {"status": "succeeded"}, best_epoch=1)
    row = _row(app, job_id)
    assert (row.status, row.stop_reason, row.best_epoch, row.error_code) == ("succeeded", "completed", 1, None)
    assert row.finished_at is not None
    assert not _end(db, job_id, "worker-a", 2, {"status": "cancelled"}), "a final job is not ended again"


@pytest.mark.parametrize("end, fields", [
    ({"status": "failed"}, {}),
    ({"status": "failed", "error_code": "nan_loss"}, {}),
    ({"status": "failed", "error_code": "nan_loss", "error_message": "   "}, {}),
    ({"status": "failed", "error_code": "not_a_listed_code", "error_message": "why"}, {}),
    ({"status": "succeeded", "error_code": "nan_loss", "error_message": "why"}, {}),
    ({"status": "running"}, {}),
    ({"status": "succeeded"}, {"status": "failed"}),
    ({"status": "succeeded"}, {"error_code": "nan_loss"}),
], ids=["no code", "no message", "blank message", "unlisted code", "error on success", "not an end",
        "status smuggled in fields", "error smuggled in fields"])
def test_a_failure_without_a_code_and_a_message_is_impossible(app: Any, job_id: str, end: dict[str, Any],
                                                              fields: dict[str, Any]) -> None:
    db = app.extensions["trainyard"].db
    claim = lifecycle.claim(db, job_id, "worker-a", lease_for=60)
    with pytest.raises(ValueError):
        _end(db, job_id, "worker-a", claim.attempt, end, **fields)
    assert _row(app, job_id).status == "running", "nothing was written"
    with pytest.raises(ValueError):
        lifecycle.fail_attempt(db, job_id, "worker-a", claim.attempt, "not_a_listed_code", "why")
    with pytest.raises(ValueError):
        lifecycle.fail_attempt(db, job_id, "worker-a", claim.attempt, JobError.WORKER_ERROR, "")
    assert _row(app, job_id).status == "running"


def test_a_failed_attempt_records_its_code_message_and_end_once(app: Any, job_id: str) -> None:
    db = app.extensions["trainyard"].db
    claim = lifecycle.claim(db, job_id, "worker-a", lease_for=60)
    assert lifecycle.fail_attempt(db, job_id, "worker-a", claim.attempt, JobError.DATASET_UNAVAILABLE,
                                  "Data set ds_x was deleted before the job started.")
    row = _row(app, job_id)
    assert (row.status, row.error_code, row.stop_reason) == ("failed", "dataset_unavailable", "error")
    assert "deleted" in row.error_message and row.finished_at is not None
    # A second report of the same attempt (the trainer had already recorded its end) writes nothing.
    assert not lifecycle.fail_attempt(db, job_id, "worker-a", claim.attempt, JobError.WORKER_ERROR, "again")
    assert _row(app, job_id).error_code == "dataset_unavailable"


def test_cancelling_ends_a_queued_job_at_once_and_a_running_one_through_its_attempt(app: Any, job_id: str) -> None:
    db = app.extensions["trainyard"].db
    with db.session() as s:
        # The shared tenant's jobs are listed and checked against openapi.yaml by other modules: a real spec.
        first = s.get(Job, job_id)
        queued = lifecycle.queued_job(tenant_id=first.tenant_id, spec=first.spec, epochs=1)
        s.add(queued)
        s.flush()
        lifecycle.request_cancel(queued)
        queued_id = queued.id
    row = _row(app, queued_id)
    assert (row.status, row.stop_reason, row.cancel_requested) == ("cancelled", "cancelled", True)
    assert row.finished_at is not None
    assert lifecycle.claim(db, queued_id, "worker-a", lease_for=60) is None, "a cancelled job is not trained"

    claim = lifecycle.claim(db, job_id, "worker-a", lease_for=60)
    with db.session() as s:
        lifecycle.request_cancel(s.get(Job, job_id, with_for_update=True))
    row = _row(app, job_id)
    assert (row.status, row.cancel_requested, row.finished_at) == ("running", True, None)
    assert lifecycle.expire_leases(db) == [], "a live lease is left alone"
    _expire(db, job_id)  # the worker died before it could stop: the reaper ends the job cancelled
    assert lifecycle.expire_leases(db) == []
    row = _row(app, job_id)
    assert (row.status, row.stop_reason, row.lease_expires_at) == ("cancelled", "cancelled", None)
    assert not lifecycle.end_cancelled(db, job_id, "worker-a", claim.attempt), "already final"


def _result(reason: str, best_epoch: int | None = 1, error: str | None = None) -> Any:
    return SimpleNamespace(stop_reason=reason, best_epoch=best_epoch, error=error)


@pytest.mark.parametrize("reason, best_epoch, status, code", [
    *[(reason, 1, "succeeded", None) for reason in StopReason if reason.ends_well],
    *[(reason, None, "failed", "no_checkpoint") for reason in StopReason if reason.ends_well],
    ("cancelled", None, "cancelled", None),
    ("nan_loss", 1, "failed", "nan_loss"),
    ("no_gradients", None, "failed", "no_gradients"),
    ("error", None, "failed", "training_error"),
    ("a reason nobody listed", None, "failed", "training_error"),
    # A diagnosis without the finding's code (an older trainer) still fails with a listed code.
    ("diagnosis", 1, "failed", "training_error"),
])
def test_every_stop_reason_maps_to_one_end(reason: str, best_epoch: int | None, status: str,
                                           code: str | None) -> None:
    end = lifecycle.end_of_run(_result(reason, best_epoch), last_epoch=4)
    assert end["status"] == status and end.get("error_code") == code
    if status == "failed":
        assert end["error_message"].strip()


@pytest.mark.parametrize("code", ["lr_too_small", "diverged", "loss_activation_mismatch"])
def test_a_diagnosis_fails_with_the_code_of_the_finding_that_stopped_it(code: str) -> None:
    result = SimpleNamespace(stop_reason="diagnosis", best_epoch=2, error=f"the {code} finding", error_code=code)
    end = lifecycle.end_of_run(result, last_epoch=2)
    assert end == {"status": "failed", "error_code": code, "error_message": f"the {code} finding"}


def test_stop_reasons_keep_their_api_values() -> None:
    assert {r.value for r in StopReason} == {"completed", "early_stopping", "max_runtime", "sweep_early_stopped",
                                             "cancelled", "interrupted", "nan_loss", "no_gradients", "diagnosis",
                                             "error", "sweep_pruned"}
    # A job never ends "interrupted" (it is re-queued): every other reason is in the API's contract.
    spec = yaml.safe_load((ROOT / "openapi.yaml").read_text())
    documented = spec["components"]["schemas"]["Job"]["properties"]["stop_reason"]["oneOf"][1]["enum"]
    assert set(documented) == {r.value for r in StopReason} - {"interrupted"}
    assert {r for r in StopReason if r.requestable} == {"cancelled", "max_runtime", "interrupted",
                                                        "sweep_early_stopped", "sweep_pruned"}
    assert StopReason.parse("completed") is StopReason.COMPLETED and StopReason.parse("nope") is None
