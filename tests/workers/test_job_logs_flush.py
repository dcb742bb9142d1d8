"""The job-log writer's flush, which every task waits on before its worker takes the next job (issue #21:
start latency). It returns once the writer has written the buffered lines, woken by the writer itself,
never at the tick of a poll; a batch the database refuses is asked for again until it is written."""
from __future__ import annotations

import logging
import threading
import time
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any, Iterator

import pytest

from workers import joblogs
from workers.joblogs import JobLogHandler


class _Db:
    """Stands in for `trainyard.db.Database`: records inserted batches; blocks each write until `go`."""

    def __init__(self) -> None:
        self.batches: list[list[dict[str, Any]]] = []
        self.go = threading.Event()
        self.down = False

    @contextmanager
    def session(self) -> Iterator["_Db"]:
        yield self

    def execute(self, _stmt: Any, batch: Any = None) -> None:
        self.go.wait(10)
        if self.down or batch is None:
            raise RuntimeError("the database is away")
        self.batches.append(list(batch))


def _line(handler: JobLogHandler, message: str) -> None:
    record = logging.LogRecord("workers.tasks", logging.INFO, __file__, 1, message, None, None)
    record.job_id = "job_1"
    handler.emit(record)


@pytest.fixture()
def no_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    def sleep(_seconds: float) -> None:
        raise AssertionError("flush polled the buffer with time.sleep")

    monkeypatch.setattr(joblogs, "time", SimpleNamespace(monotonic=time.monotonic, sleep=sleep))


def test_flush_returns_when_the_writer_has_written_the_lines_without_polling(no_polling: None) -> None:
    db = _Db()
    handler = JobLogHandler(db, "worker:1", flush_seconds=3600)  # only a flush wakes the writer
    try:
        _line(handler, "finished: succeeded")
        # The write is held until a moment after the flush began, so the flush has to wait for it.
        threading.Timer(0.2, db.go.set).start()
        assert handler.flush(timeout=10)
        assert [[row["message"] for row in batch] for batch in db.batches] == [["finished: succeeded"]]
    finally:
        db.go.set()
        handler.close()


def test_flush_asks_again_for_a_refused_batch_and_gives_up_at_its_timeout() -> None:
    db = _Db()
    db.go.set()
    db.down = True
    handler = JobLogHandler(db, "worker:1", flush_seconds=3600)
    try:
        _line(handler, "epoch 1")
        assert not handler.flush(timeout=0.3), "nothing was written: the flush says so"
        threading.Timer(0.2, lambda: setattr(db, "down", False)).start()
        assert handler.flush(timeout=10)
        assert [[row["message"] for row in batch] for batch in db.batches] == [["epoch 1"]]
    finally:
        db.down = False
        handler.close()
