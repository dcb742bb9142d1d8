"""Per-process worker state: database, artifact store, TensorFlow warm-up, the heartbeat thread that
renews the running job's lease and runs the reaper (workers/reaper.py), and the watch thread that stops
the running job in any phase when it is cancelled (workers/interrupt.py)."""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING

from celery import Celery

from trainyard.db import Database
from sqlalchemy import select

from trainyard import lifecycle
from trainyard.db.models import Job, Worker, utcnow
from trainyard.queue import QUEUE, JobSender
from trainyard.settings import Settings
from trainyard.stop_reasons import StopReason
from trainyard.store import ArtifactStore, store_from_settings
from trainyard.sweeps import controller as sweeps
from workers import leases, reaper
from workers.dataset_cache import DatasetCache
from workers.interrupt import Interrupter

if TYPE_CHECKING:
    from workers.joblogs import JobLogHandler
    from workers.webhooks import WebhookSender

logger = logging.getLogger(__name__)

# How often the watch thread looks at the running job's cancel flag (one primary-key read).
WATCH_SECONDS = 0.5
# The exit status of a worker that ended itself because a cancelled job's thread would not stop.
EXIT_STUCK = 75


class WorkerRuntime:
    def __init__(self, settings: Settings, celery: Celery) -> None:
        self.settings = settings
        self.celery = celery
        self.worker_id = "unknown"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warmed = False
        # The job this process trains now, as (job id, attempt); its lease is renewed on every beat.
        self._current: tuple[str, int] | None = None
        self._lock = threading.Lock()
        self.lease_lost = threading.Event()
        # Set by the warm-shutdown signal (SIGTERM): the running job stops at the next batch and is re-queued.
        self.shutting_down = threading.Event()
        self.job_logs: JobLogHandler | None = None
        self.webhooks: WebhookSender | None = None
        self.interrupter = Interrupter()
        self._watch_thread: threading.Thread | None = None

    @cached_property
    def db(self) -> Database:
        return Database(self.settings.database_url)

    @cached_property
    def store(self) -> ArtifactStore:
        return store_from_settings(self.db, self.settings)

    @cached_property
    def dataset_cache(self) -> DatasetCache:
        return DatasetCache(self.settings.work_dir / "datasets", self.settings.dataset_cache_bytes)

    def reset_after_fork(self) -> None:
        # Connections inherited across fork are shared sockets; drop them without closing the parent's.
        if "db" in self.__dict__:
            self.db.engine.dispose(close=False)

    def warm(self) -> None:
        """Import TensorFlow and trace a tiny fit once, so a job starts without paying for either."""
        if self._warmed:
            return
        from workers.trainer import warm_up

        from workers.trainer.distribute import visible_gpus
        from workers.trainer.process_settings import limit_threads

        limit_threads(self.settings.worker_threads)
        seconds = warm_up()
        self._warmed = True
        logger.info("TensorFlow warmed in %.2f s (threads per pool: %s)", seconds,
                    self.settings.worker_threads or "TensorFlow's default")
        if visible_gpus() < self.settings.worker_gpus:
            # Jobs asking for more than one GPU will fail here; one-GPU jobs would run on the CPU.
            logger.warning("TRAINYARD_WORKER_GPUS is %d but TensorFlow sees %d GPU(s); check CUDA_VISIBLE_DEVICES "
                           "and the TensorFlow build", self.settings.worker_gpus, visible_gpus())

    def start_heartbeat(self, worker_id: str, hostname: str) -> None:
        self.worker_id = worker_id
        if self.job_logs is not None:
            self.job_logs.worker_id = worker_id
        self.start_side_threads()
        self._beat(hostname)
        self._thread = threading.Thread(target=self._loop, args=(hostname,), name="trainyard-heartbeat", daemon=True)
        self._thread.start()
        self._watch_thread = threading.Thread(target=self._watch_loop, name="trainyard-watch", daemon=True)
        self._watch_thread.start()

    def start_side_threads(self) -> None:
        """Job logs to the database, and webhook deliveries: each in its own thread, off training's path."""
        from workers.webhooks import WebhookSender

        self.start_job_logs()
        if self.webhooks is None:
            self.webhooks = WebhookSender(self.db, self.settings)
            self.webhooks.start()

    def start_job_logs(self) -> None:
        """The handler that writes job-scoped log records to `job_logs`; a forked child needs its own (its
        parent's writer thread did not come along)."""
        from workers.joblogs import JobLogHandler

        root = logging.getLogger()
        if self.job_logs is not None and self.job_logs.pid == os.getpid():
            return
        if self.job_logs is not None:
            root.removeHandler(self.job_logs)
        self.job_logs = JobLogHandler(self.db, self.worker_id)
        root.addHandler(self.job_logs)

    def stop_heartbeat(self) -> None:
        self._stop.set()
        if self.webhooks is not None:
            self.webhooks.stop()
        if self.job_logs is not None:
            self.job_logs.flush(timeout=5)
        try:
            with self.db.session() as s:
                s.execute(Worker.__table__.delete().where(Worker.id == self.worker_id))
        except Exception:
            logger.warning("could not remove worker %s's heartbeat row", self.worker_id, exc_info=True)

    def _loop(self, hostname: str) -> None:
        while not self._stop.wait(self.settings.worker_heartbeat_seconds):
            self._beat(hostname)

    @property
    def lease_seconds(self) -> float:
        return leases.lease_seconds(self.settings.worker_heartbeat_seconds)

    def hold(self, job_id: str, attempt: int) -> None:
        """From now on the heartbeat renews this job's lease."""
        with self._lock:
            self._current = (job_id, attempt)
            self.lease_lost.clear()
            self.interrupter.reset((job_id, attempt))

    def release(self) -> None:
        with self._lock:
            self._current = None

    def _watch_loop(self) -> None:
        while not self._stop.wait(WATCH_SECONDS):
            with self._lock:
                current = self._current
            if current is None:
                continue
            try:
                self._watch(*current)
            except Exception:
                logger.warning("watching job %s failed; will retry", current[0], exc_info=True)

    def _watch(self, job_id: str, attempt: int) -> None:
        """Turn what the job must stop for into a request, and see that the training thread honours it."""
        stop = self.interrupter
        if stop.job != (job_id, attempt):
            return  # the job ended (and maybe another began) since this tick looked
        if stop.reason is None:
            if self.shutting_down.is_set() or self.lease_lost.is_set():
                # Shutting down or lease lost: the job goes on elsewhere, from its backup.
                stop.request(StopReason.INTERRUPTED.value, (job_id, attempt))
            else:
                with self.db.session() as s:
                    cancelled = s.execute(select(Job.cancel_requested).where(Job.id == job_id)).scalar_one_or_none()
                if cancelled and stop.request(StopReason.CANCELLED.value, (job_id, attempt)):
                    logger.info("job %s: cancel requested; stopping it", job_id, extra={"job_id": job_id})
        if stop.escalate() and stop.sent == 1:  # sent again every second while it does not stop: logged once
            logger.info("job %s: interrupting its training thread %.1f s after the %s request", job_id,
                        time.monotonic() - (stop.requested_at or 0.0), stop.reason, extra={"job_id": job_id})
        waited = time.monotonic() - (stop.requested_at or 0.0)
        if stop.reason == StopReason.CANCELLED and stop.active and waited >= self.settings.worker_cancel_exit_seconds:
            self._end_stuck(job_id, attempt, waited)

    def _end_stuck(self, job_id: str, attempt: int, waited: float) -> None:
        """Last resort: the training thread is stuck in one native call. The job ends cancelled now, and the
        process exits: its supervisor (`make run`, the container's restart policy) starts a fresh worker.
        Nothing accepted is lost: this job is final, and this worker holds no other."""
        # Raises while the database is away: the watch loop tries again on its next tick.
        lifecycle.end_cancelled(self.db, job_id, self.worker_id, attempt)
        logger.error("job %s: its training thread was still busy in native code %.0f s after the cancel; the "
                     "job is cancelled and this worker process exits to be restarted", job_id, waited,
                     extra={"job_id": job_id})
        self.stop_heartbeat()  # flushes the job's log lines and removes this worker's heartbeat row
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(EXIT_STUCK)

    @cached_property
    def send(self) -> JobSender:
        # Re-sends (reaper, graceful stop) and sweeps' trials go to the job's own class queue.
        return JobSender(self.celery, self.db)

    @cached_property
    def _in_broker(self) -> Callable[[list[str]], set[str]] | None:
        # Only Redis can lose a message the database still counts as queued (a flush, a restart without
        # persistence); the embedded broker keeps messages in SQLite next to the jobs.
        if self.settings.broker_url.startswith(("redis://", "rediss://")):
            # A message a worker took but never claimed (killed in between) counts as lost once it has
            # been unacknowledged longer than a lease: a live worker claims within milliseconds.
            return reaper.redis_messages_for(self.settings.broker_url, QUEUE, unacked_grace=2 * self.lease_seconds)
        return None

    def _beat(self, hostname: str) -> None:
        try:
            with self.db.session() as s:
                row = s.get(Worker, self.worker_id)
                if row is None:
                    s.add(Worker(id=self.worker_id, hostname=hostname))
                else:
                    row.last_seen = utcnow()
        except Exception:
            logger.warning("heartbeat failed; will retry", exc_info=True)
        self._renew()
        self.reap()

    def _renew(self) -> None:
        with self._lock:
            current = self._current
        if current is None:
            return
        try:
            held = leases.renew(self.db, current[0], self.worker_id, current[1], self.lease_seconds)
            # A job this attempt has just ended is final, not lost: the task releases it in a moment.
            held = held or leases.ended_by(self.db, current[0], self.worker_id, current[1])
        except Exception:
            # The database is briefly away: the lease lasts a few beats, try again on the next one.
            logger.warning("could not renew the lease of job %s; will retry", current[0], exc_info=True)
            return
        if not held:
            logger.error("job %s: this worker no longer holds its lease; stopping it", current[0])
            self.lease_lost.set()

    def reap(self) -> None:
        steps: list[tuple[str, Callable[[], object]]] = [
            ("expired leases", lambda: reaper.reap_expired_leases(self.db, self.send)),
            ("the outbox", lambda: reaper.send_unsent(self.db, self.send)),
            ("sweeps", lambda: sweeps.top_up_running(self.db, self.send, self.settings.spec_limits)),
        ]
        if self._in_broker is not None:
            steps.append(("lost messages", lambda: reaper.resend_lost(self.db, self.send, self._in_broker)))
        for what, step in steps:
            try:
                step()
            except Exception:
                logger.warning("reaping %s failed; will retry", what, exc_info=True)
