"""A failed job always says why: every path that fails a job writes a code from trainyard/job_errors.py and a
message naming the cause, the database refuses a failed job without them, and the list is the one the
README and openapi.yaml document. Real Postgres (the session database) and SQLite (a migrated file)."""
from __future__ import annotations

import re
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from alembic import command
from alembic.config import Config
from sqlalchemy import update
from sqlalchemy.orm import Session

from trainyard.db.models import Job, Tenant, new_id, utcnow
from trainyard.job_errors import MEANINGS, JobError
from trainyard.lifecycle import failure
from tests.conftest import ROOT
from trainyard import lifecycle
from workers.reaper import reap_expired_leases
from workers.resumable import LeasedReporter
from workers.trainer.types import TrainResult, describe_error

CODES = {code.value for code in JobError}


def test_every_code_has_a_meaning_and_is_documented_in_openapi_and_the_readme() -> None:
    assert set(MEANINGS) == set(JobError) and all(MEANINGS.values())
    spec = yaml.safe_load((ROOT / "openapi.yaml").read_text())
    error = spec["components"]["schemas"]["Job"]["properties"]["error"]["oneOf"][1]["properties"]
    assert set(error["code"]["enum"]) == CODES
    readme = (ROOT / "README.md").read_text()
    table = set(re.findall(r"^\| `([a-z_]+)` \| .+ \|$", readme.split("### Job errors", 1)[1], re.M))
    assert CODES <= table, CODES - table


def test_failure_takes_only_listed_codes_and_a_message() -> None:
    assert failure(JobError.NAN_LOSS, " the loss exploded ") == {
        "status": "failed", "error_code": "nan_loss", "error_message": "the loss exploded"}
    with pytest.raises(ValueError):
        failure("oops", "a code nobody documented")
    with pytest.raises(ValueError, match="message"):
        failure(JobError.WORKER_ERROR, "  ")


def test_an_error_is_described_by_its_type_and_first_line_never_a_traceback() -> None:
    assert describe_error(ValueError("shapes (None, 4) and (5, 8) are incompatible\nmore detail")) == (
        "ValueError: shapes (None, 4) and (5, 8) are incompatible")
    # TensorFlow's preamble says nothing by itself: the line after it comes along.
    assert describe_error(RuntimeError("Graph execution error:\n\nDetected at node 'x' defined at ...")) == (
        "RuntimeError: Graph execution error: Detected at node 'x' defined at ...")
    assert describe_error(KeyError()) == "KeyError"
    assert len(describe_error(ValueError("x" * 1000))) <= 300


# --- every path that fails a job, on the session's Postgres ------------------------------------------------


def _reporter(app: Any, job_id: str, attempt: int) -> LeasedReporter:
    svc = app.extensions["trainyard"]
    return LeasedReporter(svc.db, svc.store, job_id, worker_id="worker-a", attempt=attempt, retries=1,
                          shutting_down=threading.Event(), lease_lost=threading.Event())


def _result(**kw: Any) -> TrainResult:
    base = dict(stop_reason="completed", epochs_run=1, monitor="loss", best_epoch=None, best_value=None,
                best_checkpoint=None, test_metrics=None, normalization=None)
    return TrainResult(**{**base, **kw})


def _job(app: Any, job_id: str) -> Job:
    with app.extensions["trainyard"].db.session() as s:
        return s.get(Job, job_id)


@pytest.mark.parametrize("result, code, cause", [
    (_result(stop_reason="error", error="ValueError: Input 0 of layer dense_1 is incompatible"),
     JobError.TRAINING_ERROR, "ValueError: Input 0 of layer dense_1 is incompatible"),
    (_result(stop_reason="nan_loss"), JobError.NAN_LOSS, "NaN or infinite at epoch 1"),
    (_result(stop_reason="no_gradients"), JobError.NO_GRADIENTS, "no trainable variable gets a gradient"),
    (_result(stop_reason="max_runtime", epochs_run=0), JobError.NO_CHECKPOINT, "before any epoch finished"),
    (_result(stop_reason="completed", best_epoch=2, best_value=0.5), JobError.CHECKPOINT_UNAVAILABLE,
     "best checkpoint (epoch 2) could not be stored"),
    (_result(stop_reason="error"), JobError.TRAINING_ERROR, "stop reason 'error'"),
], ids=["engine exception", "nan_loss", "no_gradients", "no_checkpoint", "checkpoint_unavailable",
        "error without a description"])
def test_the_end_of_a_failed_run_records_a_code_and_a_message_naming_the_cause(
        app: Any, job_id: str, result: TrainResult, code: JobError, cause: str) -> None:
    claim = lifecycle.claim(app.extensions["trainyard"].db, job_id, "worker-a", lease_for=60)
    _reporter(app, job_id, claim.attempt).finished(result)
    job = _job(app, job_id)
    assert (job.status, job.error_code) == ("failed", code)
    assert cause in job.error_message and "Traceback" not in job.error_message


def test_a_job_whose_workers_keep_dying_fails_with_worker_lost(app: Any, job_id: str) -> None:
    db = app.extensions["trainyard"].db
    for attempt in range(1, 4):  # each attempt's worker dies: its lease runs out, the reaper re-queues it
        assert lifecycle.claim(db, job_id, f"worker-{attempt}", lease_for=60).attempt == attempt
        with db.session() as s:
            s.execute(update(Job).where(Job.id == job_id).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
        reap_expired_leases(db, send=lambda _: None)
    job = _job(app, job_id)
    assert (job.status, job.error_code) == ("failed", JobError.WORKER_LOST)
    assert "stopped without finishing it 3 times" in job.error_message


def test_postgres_refuses_a_failed_job_without_an_error(app: Any, job_id: str) -> None:
    db = app.extensions["trainyard"].db
    with pytest.raises(sa.exc.IntegrityError, match="ck_jobs_failed_has_error"):
        with db.session() as s:
            s.execute(update(Job).where(Job.id == job_id).values(status="failed"))
    with db.session() as s:
        s.execute(update(Job).where(Job.id == job_id).values(
            **failure(JobError.WORKER_ERROR, "The worker could not prepare the job: OSError: disk full")))
    assert _job(app, job_id).status == "failed"


# --- the migration, on SQLite (the embedded default) -------------------------------------------------------


def _migrate(url: str, revision: str) -> None:
    cfg = Config(str(ROOT / "alembic.ini"), attributes={"configure_logging": False})
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url)
    command.upgrade(cfg, revision)


def _insert_job(engine: sa.Engine, status: str = "queued", **values: Any) -> str:
    # In Core, naming only these columns (and those with defaults): the schema may be an older revision's,
    # without the columns later migrations added to the model.
    tenant_id, job_id = new_id("tn"), new_id("job")
    with engine.begin() as conn:
        conn.execute(sa.insert(Tenant.__table__).values(id=tenant_id, name=f"t-{utcnow().timestamp()}"))
        conn.execute(sa.insert(Job.__table__).values(id=job_id, tenant_id=tenant_id, status=status, spec={}, epochs=1,
                                                     **values))
    return job_id


def test_the_migration_backfills_old_failures_and_sqlite_refuses_new_ones_without_an_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
    _migrate(url, "0005")  # the revision before 0008
    engine = sa.create_engine(url)
    old = _insert_job(engine, stop_reason="error")
    diverged = _insert_job(engine, stop_reason="nan_loss")
    with engine.begin() as conn:  # failed as the engine used to record an exception: no code, no message
        conn.execute(update(Job).where(Job.id.in_([old, diverged])).values(status="failed"))
    _migrate(url, "head")
    with Session(engine) as s:
        rows = {job.id: job for job in s.query(Job).filter(Job.id.in_([old, diverged]))}
    assert (rows[old].error_code, rows[diverged].error_code) == ("training_error", "nan_loss")
    assert "stop reason error" in rows[old].error_message and "logs" in rows[old].error_message

    fresh = _insert_job(engine)
    for values in ({"status": "failed"}, {"status": "failed", "error_code": "training_error"}):
        with pytest.raises(sa.exc.IntegrityError, match="ck_jobs_failed_has_error"):
            with engine.begin() as conn:
                conn.execute(update(Job).where(Job.id == fresh).values(**values))
    with pytest.raises(sa.exc.IntegrityError, match="ck_jobs_failed_has_error"):
        _insert_job(engine, status="failed")
    with engine.begin() as conn:
        conn.execute(update(Job).where(Job.id == fresh).values(**failure(JobError.NAN_LOSS, "The loss became NaN.")))
    engine.dispose()

