"""Per-process worker state: database, artifact store, TensorFlow warm-up, heartbeat and outbox sweep."""
from __future__ import annotations

import logging
import threading
from datetime import timedelta
from functools import cached_property

from celery import Celery
from sqlalchemy import select, update

from service.db import Database
from service.db.models import Job, Worker, utcnow
from service.queue import enqueue_job
from service.settings import Settings
from service.store import ArtifactStore, make_store

logger = logging.getLogger(__name__)

# A queued job whose message the broker never took is re-sent after this long.
OUTBOX_GRACE_SECONDS = 2.0


class WorkerRuntime:
    def __init__(self, settings: Settings, celery: Celery) -> None:
        self.settings = settings
        self.celery = celery
        self.worker_id = "unknown"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warmed = False

    @cached_property
    def db(self) -> Database:
        return Database(self.settings.database_url)

    @cached_property
    def store(self) -> ArtifactStore:
        return make_store(self.db, self.settings.artifact_url)

    def reset_after_fork(self) -> None:
        # Connections inherited across fork are shared sockets; drop them without closing the parent's.
        if "db" in self.__dict__:
            self.db.engine.dispose(close=False)

    def warm(self) -> None:
        """Import TensorFlow and trace a tiny fit once, so a job starts without paying for either."""
        if self._warmed:
            return
        from workers.trainer import warm_up

        seconds = warm_up()
        self._warmed = True
        logger.info("TensorFlow warmed in %.2f s", seconds)

    def start_heartbeat(self, worker_id: str, hostname: str) -> None:
        self.worker_id = worker_id
        self._beat(hostname)
        self._thread = threading.Thread(target=self._loop, args=(hostname,), name="trainyard-heartbeat", daemon=True)
        self._thread.start()

    def stop_heartbeat(self) -> None:
        self._stop.set()
        try:
            with self.db.session() as s:
                s.execute(Worker.__table__.delete().where(Worker.id == self.worker_id))
        except Exception:
            logger.warning("could not remove worker %s's heartbeat row", self.worker_id, exc_info=True)

    def _loop(self, hostname: str) -> None:
        while not self._stop.wait(self.settings.worker_heartbeat_seconds):
            self._beat(hostname)

    def _beat(self, hostname: str) -> None:
        try:
            with self.db.session() as s:
                row = s.get(Worker, self.worker_id)
                if row is None:
                    s.add(Worker(id=self.worker_id, hostname=hostname))
                else:
                    row.last_seen = utcnow()
            self.sweep_outbox()
        except Exception:
            logger.warning("heartbeat failed; will retry", exc_info=True)

    def sweep_outbox(self) -> int:
        """Enqueue queued jobs the broker never accepted (it was down when they were submitted)."""
        cutoff = utcnow() - timedelta(seconds=OUTBOX_GRACE_SECONDS)
        if self.settings.is_embedded:
            cutoff = cutoff.replace(tzinfo=None)
        with self.db.session() as s:
            ids = list(s.execute(
                select(Job.id).where(Job.status == "queued", Job.enqueued_at.is_(None), Job.created_at < cutoff)
                .limit(100)
            ).scalars())
        for job_id in ids:
            enqueue_job(self.celery, job_id)
            with self.db.session() as s:
                s.execute(update(Job).where(Job.id == job_id, Job.enqueued_at.is_(None)).values(enqueued_at=utcnow()))
            logger.info("re-sent job %s that the broker had not accepted", job_id)
        return len(ids)
