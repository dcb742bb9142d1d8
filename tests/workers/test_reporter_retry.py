"""The one retry layer between the trainer and its sinks is the reporter: the trainer calls each method
once (tests/trainer/test_callback_reporting.py), and every method it calls retries its write here when the
database is briefly down, then records it. Real Postgres (the session database) and a real LeasedReporter,
as the worker builds it; only the reporter's handle on the database fails, a set number of times."""
from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest
from sqlalchemy import select

from trainyard.db.exports import JobExport
from trainyard.db.models import Checkpoint, EpochDiagnostics, EpochMetrics, Finding, Job
from tests.workers.test_fencing import _diag, _file, _result
from trainyard import lifecycle
from workers.reporting import DbReporter
from workers.resumable import LeasedReporter


class BrieflyDown:
    """The database, except that the next `failures` sessions fail to open."""

    def __init__(self, db: Any) -> None:
        self._db = db
        self.failures = 0
        self.opened = 0

    @contextmanager
    def session(self) -> Iterator[Any]:
        self.opened += 1
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("database briefly down")
        with self._db.session() as s:
            yield s


@pytest.fixture()
def down(app: Any, job_id: str) -> BrieflyDown:
    return BrieflyDown(app.extensions["trainyard"].db)


def _reporter(app: Any, job_id: str, db: BrieflyDown, retries: int) -> LeasedReporter:
    svc = app.extensions["trainyard"]
    assert lifecycle.claim(svc.db, job_id, "worker-a", lease_for=60) is not None
    return LeasedReporter(db, svc.store, job_id, worker_id="worker-a", attempt=1, retries=retries,
                          shutting_down=threading.Event(), lease_lost=threading.Event())


def _job(app: Any, job_id: str) -> Job:
    with app.extensions["trainyard"].db.session() as s:
        return s.get(Job, job_id)


def test_every_method_the_trainer_calls_retries_its_write(app: Any, job_id: str, down: BrieflyDown,
                                                          tmp_path: Path) -> None:
    reporter = _reporter(app, job_id, down, retries=3)
    db = app.extensions["trainyard"].db
    finding = {"code": "plateau", "severity": "info", "message": "flat", "evidence": {}, "layer": None,
               "epoch": 1, "suggested_change": None}
    ckpt, ckpt_size, ckpt_sha = _file(tmp_path, "best.keras")
    export, export_size, export_sha = _file(tmp_path, "export.tar.gz")
    backup, _, _ = _file(tmp_path, "backup.weights.h5")
    calls = [
        ("started", lambda: reporter.started({"params": 7})),
        ("epoch_end", lambda: reporter.epoch_end(1, {"loss": 0.5})),
        ("checkpoint_saved", lambda: reporter.checkpoint_saved(1, "val_loss", 0.1, ckpt, ckpt_size, ckpt_sha)),
        ("diagnostics", lambda: reporter.diagnostics(1, _diag(0.5))),
        ("findings", lambda: reporter.findings([finding])),
        ("backup_saved", lambda: reporter.backup_saved(1, backup, {"epoch": 1})),
        ("export_saved", lambda: reporter.export_saved("savedmodel", 1, export, export_size, export_sha)),
        ("finished", lambda: reporter.finished(_result(best_checkpoint=ckpt))),
    ]
    for what, call in calls:
        down.failures, down.opened = 2, 0
        call()  # never raises: the reporter waits the outage out
        assert down.failures == 0 and down.opened >= 3, what
    with db.session() as s:
        job = s.get(Job, job_id)
        assert job.model_info["params"] == 7 and job.epoch == 1 and job.backup_epoch == 1
        assert (job.status, job.best_epoch) == ("succeeded", 1)
        assert s.get(EpochMetrics, (job_id, 1)).values == {"loss": 0.5}
        assert s.get(EpochDiagnostics, (job_id, 1)).loss == 0.5
        assert [f.code for f in s.execute(select(Finding).where(Finding.job_id == job_id)).scalars()] == ["plateau"]
        assert s.execute(select(Checkpoint.epoch).where(Checkpoint.job_id == job_id)).scalars().all() == [1]
        assert s.get(JobExport, (job_id, "savedmodel")).epoch == 1


def test_a_write_that_stays_down_is_given_up_without_raising(app: Any, job_id: str, down: BrieflyDown) -> None:
    reporter = _reporter(app, job_id, down, retries=2)
    down.failures = 10**6
    reporter.epoch_end(1, {"loss": 0.5})  # the trainer goes on: a lost metric row is better than a lost run
    assert down.opened == 2  # exactly `retries` attempts, all in the reporter
    reporter.finished(_result())
    assert down.opened == 4  # the end's check of the best checkpoint, also retried, then left unrecorded
    assert _job(app, job_id).status == "running"


def test_retries_are_validated() -> None:
    for retries in (0, -1, 1.5):
        with pytest.raises(ValueError, match="retries"):
            DbReporter(None, None, "job", retries=retries)  # type: ignore[arg-type]


def test_the_job_log_states_a_finding_once_and_again_when_its_advice_changes(
        app: Any, job_id: str, down: BrieflyDown, caplog: pytest.LogCaptureFixture) -> None:
    """A finding re-sent every epoch with fresh numbers in its message is logged once (issue 17); a new
    suggested change or severity is news and is logged again. Its row always has the latest."""
    reporter = _reporter(app, job_id, down, retries=3)

    def lr_too_small(epoch: int, rate: float) -> dict[str, Any]:
        return {"id": "lr_too_small:-", "code": "lr_too_small", "severity": "error",
                "message": f"after {epoch} epoch(s) the weights have not changed", "evidence": {"epochs": epoch},
                "layer": None, "epoch": epoch, "suggested_change": {"optimizer": {"learning_rate": rate}},
                "suggested_change_basis": "update_ratio"}

    with caplog.at_level("INFO", logger="workers.reporting"):
        for epoch in (1, 2, 3):
            reporter.findings([lr_too_small(epoch, 0.005)])
        reporter.findings([lr_too_small(4, 0.01)])
    logged = [r.getMessage() for r in caplog.records if r.getMessage().startswith("finding lr_too_small")]
    assert len(logged) == 2 and "after 1 epoch" in logged[0] and "after 4 epoch" in logged[1]
    with app.extensions["trainyard"].db.session() as s:
        [row] = s.execute(select(Finding).where(Finding.job_id == job_id)).scalars()
        assert (row.epoch, row.suggested_change_basis) == (4, "update_ratio")
