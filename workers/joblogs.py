"""Per-job logs: the log records of a job's training go to `job_logs` (GET /v1/jobs/{id}/logs).

A record belongs to a job when it is logged while the job trains (`trainyard.logconfig.job_id_var`, set by
workers/tasks.py) or names it with `extra={"job_id": ...}` (the reaper, the webhook sender). `emit` only
appends to a bounded buffer: a background thread writes batches, keeps what failed for the next try,
and drops the oldest lines (counting them) if the database stays away. A log write never raises into
training, never waits for the database, and never takes the job down with it.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from datetime import datetime, timezone

from sqlalchemy import insert

from trainyard.db import Database
from trainyard.db.live import JobLog
from trainyard.logconfig import job_id_var

logger = logging.getLogger(__name__)

MAX_BUFFERED = 10_000
MAX_MESSAGE = 4000
# While a flush waits and the database refuses the batch, the writer is asked again this often.
RETRY_SECONDS = 0.05


class JobLogHandler(logging.Handler):
    def __init__(self, db: Database, worker_id: str, level: int = logging.INFO, flush_seconds: float = 0.5) -> None:
        super().__init__(level)
        self.db = db
        self.worker_id = worker_id
        self.pid = os.getpid()
        self.flush_seconds = flush_seconds
        self._buffer: deque[dict[str, object]] = deque()
        self._lock = threading.Lock()
        # Notified by the writer whenever it finishes a batch: `flush` waits on it instead of sleeping.
        self._written = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self.dropped = 0
        self._writing = False
        self.trainyard_keep = True  # configure_logging leaves this handler in place
        self._thread = threading.Thread(target=self._loop, name="trainyard-joblogs", daemon=True)
        self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        job_id = getattr(record, "job_id", None) or job_id_var.get()
        if not job_id or record.name == __name__:
            return
        try:
            message = record.getMessage()
            if record.exc_info and record.exc_info[1] is not None:
                exc = record.exc_info[1]
                message += f" ({type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''})"
            row = {"job_id": job_id, "created_at": datetime.fromtimestamp(record.created, timezone.utc),
                   "level": record.levelname, "logger": record.name[:200], "message": message[:MAX_MESSAGE],
                   "worker_id": self.worker_id}
        except Exception:  # a record that cannot be formatted is not worth a failed job
            return
        with self._lock:
            if len(self._buffer) >= MAX_BUFFERED:
                self._buffer.popleft()
                self.dropped += 1
            self._buffer.append(row)

    def flush(self, timeout: float | None = None) -> bool:
        """Ask the writer to write now; with `timeout`, wait until the buffer is empty (True) or give up.

        The task waits here after every job, before its worker takes the next one, so the wait ends the
        moment the writer has written the last batch (it notifies `_written`), not at the next tick of a
        poll; a failed write is retried every RETRY_SECONDS until `timeout`."""
        self._wake.set()
        if timeout is None:
            return True
        deadline = time.monotonic() + timeout
        with self._written:
            while self._buffer or self._writing:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                if not self._written.wait(min(remaining, RETRY_SECONDS)):
                    self._wake.set()  # no batch written meanwhile (the database refused it?): ask again
        return True

    def close(self) -> None:
        self.flush(timeout=5)
        self._stop.set()
        self._wake.set()
        super().close()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.flush_seconds)
            self._wake.clear()
            self._write()

    def _write(self) -> None:
        with self._lock:
            batch = list(self._buffer)
            self._buffer.clear()
            self._writing = bool(batch)
        if not batch:
            return
        try:
            with self.db.session() as s:
                s.execute(insert(JobLog), batch)
        except Exception:
            logger.warning("could not write %d job log lines; will retry", len(batch), exc_info=True)
            # A deleted job's lines fail their foreign key: drop those, keep the rest for the next try.
            batch = self._without_deleted_jobs(batch)
            with self._lock:
                room = MAX_BUFFERED - len(self._buffer)
                self.dropped += max(0, len(batch) - room)
                self._buffer.extendleft(reversed(batch[len(batch) - max(room, 0):] if room > 0 else []))
        finally:
            with self._lock:
                self._writing = False
                self._written.notify_all()

    def _without_deleted_jobs(self, batch: list[dict[str, object]]) -> list[dict[str, object]]:
        from sqlalchemy import select

        from trainyard.db.models import Job

        ids = {r["job_id"] for r in batch}
        try:
            with self.db.session() as s:
                present = set(s.execute(select(Job.id).where(Job.id.in_(ids))).scalars())
        except Exception:
            return batch
        return [r for r in batch if r["job_id"] in present]
