"""Wake-ups for the API's event streams: one listener per API process, many sleeping streams.

The database is the source of truth (the `job_events` log, trainyard/db/live.py); this module only tells a
sleeping stream that its job may have something new, so an idle stream costs a parked greenlet (or
thread) and no queries. Each stream still re-reads the log on its keep-alive tick, so a lost wake-up
delays an event by at most one keep-alive interval and never loses it.

- Postgres: a dedicated connection runs `LISTEN trainyard_events`; the trigger on `job_events` sends the
  job id at commit (migrations/versions/0005_live_events_logs_webhooks.py), whichever process wrote it.
- SQLite (the embedded default): the listener polls `max(seq)` of `job_events`, one cheap query per
  interval for the whole process, and wakes every stream when it moves.
"""
from __future__ import annotations

import logging
import threading
from collections import defaultdict

from sqlalchemy import func, make_url, select

from trainyard.db import Database
from trainyard.db.live import NOTIFY_CHANNEL, JobEvent

logger = logging.getLogger(__name__)


class Subscription:
    def __init__(self, hub: "EventHub", job_id: str) -> None:
        self.hub = hub
        self.job_id = job_id
        self.event = threading.Event()

    def wait(self, timeout: float) -> bool:
        """True when woken (something may have changed), False after `timeout` seconds of quiet."""
        woken = self.event.wait(timeout)
        self.event.clear()
        return woken

    @property
    def draining(self) -> bool:
        """The process is stopping (`EventHub.drain`): the stream should end now."""
        return self.hub.draining

    def close(self) -> None:
        self.hub._unsubscribe(self)


class EventHub:
    def __init__(self, db: Database, poll_seconds: float) -> None:
        self.db = db
        self.poll_seconds = poll_seconds
        self._subs: dict[str, set[Subscription]] = defaultdict(set)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()
        self._draining = threading.Event()

    def close(self) -> None:
        """Stop the listener (within a second or two) before the database goes away."""
        self._closed.set()

    @property
    def draining(self) -> bool:
        return self._draining.is_set()

    def drain(self) -> None:
        """The process is stopping (gunicorn got SIGTERM): wake every stream so each ends at once, cleanly,
        telling its client to reconnect, instead of holding the stop for the whole graceful timeout and
        then being cut mid-response. Streams opened from now on end as soon as they have caught up."""
        self._draining.set()
        self.wake(None)

    def subscribe(self, job_id: str) -> Subscription:
        self._ensure_listener()
        sub = Subscription(self, job_id)
        with self._lock:
            self._subs[job_id].add(sub)
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            subs = self._subs.get(sub.job_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[sub.job_id]

    def streams(self) -> int:
        with self._lock:
            return sum(len(s) for s in self._subs.values())

    def wake(self, job_id: str | None) -> None:
        """Wake the streams of one job, or of every job when `job_id` is None."""
        with self._lock:
            subs = [s for group in self._subs.values() for s in group] if job_id is None \
                else list(self._subs.get(job_id, ()))
        for sub in subs:
            sub.event.set()

    def _ensure_listener(self) -> None:
        # Started by the first stream of this process (after gunicorn forked it), never at import.
        with self._lock:
            if self._thread is not None:
                return
            target = self._listen_postgres if self.db.url.startswith("postgresql") else self._poll
            self._thread = threading.Thread(target=target, name="trainyard-events", daemon=True)
            self._thread.start()

    def _poll(self) -> None:
        last: int | None = None
        while not self._closed.is_set():
            try:
                with self.db.session() as s:
                    head = s.execute(select(func.max(JobEvent.seq))).scalar_one_or_none() or 0
                if last is not None and head != last:
                    self.wake(None)
                last = head
            except Exception:
                if self._closed.is_set():
                    return
                logger.warning("polling job events failed; will retry", exc_info=True)
            self._closed.wait(self.poll_seconds)

    def _listen_postgres(self) -> None:
        import psycopg

        dsn = make_url(self.db.url).set(drivername="postgresql").render_as_string(hide_password=False)
        delay = 0.5
        while not self._closed.is_set():
            try:
                with psycopg.connect(dsn, autocommit=True) as conn:
                    conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                    # Whatever happened while (re)connecting is picked up by a full re-read.
                    self.wake(None)
                    delay = 0.5
                    while not self._closed.is_set():
                        for note in conn.notifies(timeout=1):
                            self.wake(note.payload)
            except Exception:
                if self._closed.is_set():
                    return
                logger.warning("listening for job events failed; reconnecting in %.1f s", delay, exc_info=True)
                self._closed.wait(delay)
                delay = min(delay * 2, 10.0)
