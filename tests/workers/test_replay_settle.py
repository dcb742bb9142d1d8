"""A replay's end writes its `reproduction`, in the transaction that ends it, whichever way it ends (the
lifecycle's ORM and Core paths alike), on the session's real Postgres; a job that is not a replay gets none,
and a replay whose original was deleted gets null."""
from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select

from trainyard import lifecycle
from trainyard.db.models import EpochMetrics, Job
from trainyard.job_errors import JobError
from trainyard.stop_reasons import StopReason

ENV = {"keras": "3.6.0", "device": {"kind": "cpu", "name": "A"}}
ROWS = {1: {"loss": 1.0, "learning_rate": 0.01, "seconds": 0.1}, 2: {"loss": 0.5, "learning_rate": 0.01, "seconds": 0.1}}


def _replay(db: Any, template: Job, original: str) -> str:
    with db.session() as s:
        job = Job(tenant_id=template.tenant_id, name="replay", status="queued", spec=template.spec,
                  epochs=template.epochs, resource_class=template.resource_class, replay_of=original)
        s.add(job)
        s.flush()
        return job.id


def _epochs(db: Any, job_id: str, rows: dict[int, dict[str, float]]) -> None:
    with db.session() as s:
        s.add_all(EpochMetrics(job_id=job_id, epoch=e, values=v) for e, v in rows.items())


def _reproduction(db: Any, job_id: str) -> Any:
    with db.session() as s:
        return s.execute(select(Job.reproduction).where(Job.id == job_id)).scalar_one()


def _claim(db: Any, job_id: str, environment: dict[str, Any]) -> int:
    claim = lifecycle.claim(db, job_id, "worker-t", lease_for=60, environment=lambda spec: environment)
    assert claim is not None
    return claim.attempt


def test_each_way_a_replay_ends_writes_its_reproduction(app: Any, job_id: str) -> None:
    db = app.extensions["trainyard"].db
    with db.session() as s:
        template = s.get(Job, job_id)
        template.environment = ENV
        s.flush()
        s.expunge(template)
    _epochs(db, job_id, ROWS)

    # Succeeded (end_run, through the ORM row) with the same values at every epoch, slower.
    same = _replay(db, template, job_id)
    attempt = _claim(db, same, ENV)
    _epochs(db, same, {e: {**v, "seconds": 9.0} for e, v in ROWS.items()})
    with db.session() as s:
        job = lifecycle.end_run(s, same, "worker-t", attempt, {"status": "succeeded"},
                                stop_reason=StopReason.COMPLETED, best_epoch=2)
        assert job is not None and job.reproduction is not None and job.reproduction["identical"] is True
    assert _reproduction(db, same) == {"identical": True, "first_divergent_epoch": None,
                                       "max_abs_diff": {"learning_rate": 0.0, "loss": 0.0}, "environment_diff": {}}

    # Failed after one epoch on another device (fail_attempt, a Core update).
    failed = _replay(db, template, job_id)
    attempt = _claim(db, failed, {**ENV, "device": {"kind": "cpu", "name": "B"}})
    _epochs(db, failed, {1: {**ROWS[1], "loss": 1.25}})
    assert lifecycle.fail_attempt(db, failed, "worker-t", attempt, JobError.WORKER_ERROR, "broke")
    assert _reproduction(db, failed) == {"identical": False, "first_divergent_epoch": 1,
                                         "max_abs_diff": {"learning_rate": 0.0, "loss": 0.25},
                                         "environment_diff": {"device.name": ["A", "B"]}}

    # Cancelled in a phase (end_cancelled, a Core update) having run the first epoch exactly.
    cancelled = _replay(db, template, job_id)
    attempt = _claim(db, cancelled, ENV)
    _epochs(db, cancelled, {1: ROWS[1]})
    assert lifecycle.end_cancelled(db, cancelled, "worker-t", attempt)
    assert _reproduction(db, cancelled)["first_divergent_epoch"] == 2

    # The original deleted before the replay ended: nothing to compare with.
    orphan = _replay(db, template, job_id)
    with db.session() as s:
        s.execute(delete(Job).where(Job.id == job_id))
    with db.session() as s:
        lifecycle.request_cancel(s.get(Job, orphan))
    with db.session() as s:
        row = s.get(Job, orphan)
        assert (row.status, row.reproduction) == ("cancelled", None)


def test_a_job_that_is_not_a_replay_gets_no_reproduction(app: Any, job_id: str) -> None:
    db = app.extensions["trainyard"].db
    attempt = _claim(db, job_id, ENV)
    assert lifecycle.end_cancelled(db, job_id, "worker-t", attempt)
    assert _reproduction(db, job_id) is None
