"""A fork's end marks the parent's findings it applied (`resolved_by`), in the transaction that ends it,
whichever way it ends, on the session's real Postgres: resolved only when the fork succeeded without a
finding of the same code; a later fork that did not resolve a finding never replaces one that did."""
from __future__ import annotations

from typing import Any

from sqlalchemy import select

from trainyard import lifecycle
from trainyard.db.models import Finding, Job
from trainyard.job_errors import JobError
from trainyard.stop_reasons import StopReason


def _job(db: Any, template: Job, **fields: Any) -> str:
    with db.session() as s:
        job = Job(tenant_id=template.tenant_id, name="fork", status="queued", spec=template.spec,
                  epochs=template.epochs, resource_class=template.resource_class, **fields)
        s.add(job)
        s.flush()
        return job.id


def _findings(db: Any, job_id: str, *ids: str) -> None:
    with db.session() as s:
        for finding_id in ids:
            code, _, layer = finding_id.partition(":")
            s.add(Finding(job_id=job_id, code=code, layer="" if layer == "-" else layer, severity="error",
                          message="m", evidence={}, suggested_change={"optimizer": {"learning_rate": 0.01}}))


def _resolved(db: Any, job_id: str) -> dict[str, tuple[str | None, bool | None]]:
    with db.session() as s:
        rows = s.execute(select(Finding).where(Finding.job_id == job_id)).scalars()
        return {f"{f.code}:{f.layer or '-'}": (f.resolved_by_job_id, f.resolved) for f in rows}


def test_each_way_a_fork_ends_settles_the_findings_it_applied(app: Any, job_id: str) -> None:
    db = app.extensions["trainyard"].db
    with db.session() as s:
        template = s.get(Job, job_id)
        s.expunge(template)
    _findings(db, job_id, "lr_too_small:-", "zero_gradients:dense_1", "plateau:-")
    applied = ["lr_too_small:-", "zero_gradients:dense_1"]

    def fork() -> str:
        return _job(db, template, parent_id=job_id, parent_from="scratch", parent_patch={},
                    parent_findings=applied)

    # Cancelled while queued: tried, resolved nothing.
    cancelled = fork()
    with db.session() as s:
        lifecycle.request_cancel(s.get(Job, cancelled))
    assert _resolved(db, job_id) == {"lr_too_small:-": (cancelled, False),
                                     "zero_gradients:dense_1": (cancelled, False), "plateau:-": (None, None)}

    # Succeeded, but zero gradients again on another layer: only lr_too_small is resolved.
    succeeded = fork()
    claim = lifecycle.claim(db, succeeded, "worker-t", lease_for=60)
    assert claim is not None
    _findings(db, succeeded, "zero_gradients:dense_2")
    with db.session() as s:
        assert lifecycle.end_run(s, succeeded, "worker-t", claim.attempt, {"status": "succeeded"},
                                 stop_reason=StopReason.COMPLETED, best_epoch=1) is not None
    assert _resolved(db, job_id) == {"lr_too_small:-": (succeeded, True),
                                     "zero_gradients:dense_1": (succeeded, False), "plateau:-": (None, None)}

    # A later fork that fails: it replaces the unresolved one, never the resolved one.
    failed = fork()
    claim = lifecycle.claim(db, failed, "worker-t", lease_for=60)
    assert claim is not None
    assert lifecycle.fail_attempt(db, failed, "worker-t", claim.attempt, JobError.WORKER_ERROR, "broke")
    assert _resolved(db, job_id) == {"lr_too_small:-": (succeeded, True),
                                     "zero_gradients:dense_1": (failed, False), "plateau:-": (None, None)}


def test_a_job_that_is_not_a_fork_touches_no_finding(app: Any, job_id: str) -> None:
    db = app.extensions["trainyard"].db
    _findings(db, job_id, "lr_too_small:-")
    claim = lifecycle.claim(db, job_id, "worker-t", lease_for=60)
    assert claim is not None and lifecycle.end_cancelled(db, job_id, "worker-t", claim.attempt)
    assert _resolved(db, job_id) == {"lr_too_small:-": (None, None)}
