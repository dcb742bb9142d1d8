"""The lease side of stopping a job: an attempt that ended its job has not lost it, and a cancelled attempt the
worker had to interrupt ends its job cancelled, only while it still holds it."""
from __future__ import annotations

from typing import Any

from trainyard.db.models import Job
from trainyard import lifecycle
from workers import leases


def _row(app: Any, job_id: str) -> Job:
    with app.extensions["trainyard"].db.session() as s:
        job = s.get(Job, job_id)
        s.expunge(job)
        return job


def test_a_renewal_after_the_attempt_ended_its_job_is_not_a_lost_lease(app: Any, job_id: str) -> None:
    db = app.extensions["trainyard"].db
    claim = lifecycle.claim(db, job_id, "w1", 30)
    assert claim is not None
    assert not leases.ended_by(db, job_id, "w1", claim.attempt), "still running"
    with db.session() as s:
        s.get(Job, job_id).status = "succeeded"  # what the attempt's reporter writes at its end
    assert not leases.renew(db, job_id, "w1", claim.attempt, 30)
    assert leases.ended_by(db, job_id, "w1", claim.attempt)
    assert not leases.ended_by(db, job_id, "w2", claim.attempt), "another worker's attempt"
    assert not leases.ended_by(db, job_id, "w1", claim.attempt + 1)


def test_a_stopped_attempt_ends_its_job_cancelled_only_while_it_holds_it(app: Any, job_id: str) -> None:
    db = app.extensions["trainyard"].db
    claim = lifecycle.claim(db, job_id, "w1", 30)
    assert claim is not None
    with db.session() as s:
        s.get(Job, job_id).best_epoch = 2  # a checkpoint stored before the cancel stays the best
    assert not lifecycle.end_cancelled(db, job_id, "w2", claim.attempt)
    assert _row(app, job_id).status == "running"
    assert lifecycle.end_cancelled(db, job_id, "w1", claim.attempt)
    row = _row(app, job_id)
    assert (row.status, row.stop_reason, row.best_epoch, row.lease_expires_at) == ("cancelled", "cancelled", 2, None)
    assert row.finished_at is not None
    assert not lifecycle.end_cancelled(db, job_id, "w1", claim.attempt), "once"
