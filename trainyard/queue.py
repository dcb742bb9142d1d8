"""The Celery application as the API sees it: configuration, and the one way a job's message is sent.

The API never imports the task's module (it would pull in TensorFlow): a job is sent by task name only
(`enqueue_job`), always through a process's `JobSender`, which knows the job's queue. Workers register the
task on the same app in `workers.celery_app`.
"""
from __future__ import annotations

from celery import Celery
from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import sqlalchemy as kombu_sqla
from sqlalchemy import create_engine, select

from trainyard.db import Database
from trainyard.db.models import Job
from trainyard.resources import ANY, DEFAULT_QUEUE, queue_name
from trainyard.settings import Settings

TRAIN_TASK = "trainyard.train_job"
# The default queue (jobs without `resources`); every resource class has its own (trainyard/resources.py).
QUEUE = DEFAULT_QUEUE

# kombu's SQLAlchemy transport hands every transport option it does not know to `create_engine`, which
# refuses the ones kombu's own virtual transport reads (kombu 5.7). These never go to the engine.
_TRANSPORT_ONLY_OPTIONS = frozenset({
    "polling_interval", "visibility_timeout", "queue_tablename", "message_tablename", "callback", "errback",
    "max_retries", "interval_start", "interval_step", "interval_max", "retry_errors",
})


class SqlaChannel(kombu_sqla.Channel):
    def _engine_from_config(self):  # type: ignore[no-untyped-def]
        conninfo = self.connection.client
        options = {k: v for k, v in conninfo.transport_options.items() if k not in _TRANSPORT_ONLY_OPTIONS}
        return create_engine(conninfo.hostname, **options)


class SqlaTransport(kombu_sqla.Transport):
    """The serverless broker of the embedded default, able to poll faster than kombu's 1 s default."""

    Channel = SqlaChannel


def make_celery(settings: Settings) -> Celery:
    if settings.broker_url.startswith("sqla+"):
        # kombu resolves a URL's transport by its alias; point `sqla+` at the subclass above.
        TRANSPORT_ALIASES["sqla"] = f"{__name__}:SqlaTransport"
    app = Celery("trainyard", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_default_queue=QUEUE,
        task_ignore_result=True,
        # A job is acknowledged only when its task returns: a worker that dies mid-job leaves the
        # message to be redelivered instead of losing it.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "polling_interval": settings.broker_polling_interval,
            # Training runs for hours: Redis must not redeliver a running job after the default 1 h. Recovery
            # from a dead worker does not wait for this: its lease expires and the reaper re-queues the job
            # within a few heartbeats (workers/leases.py, workers/reaper.py).
            "visibility_timeout": 7 * 24 * 3600,
        },
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
    )
    return app


def enqueue_job(celery: Celery, job_id: str, resource_class: str = ANY) -> None:
    """Send the job to its resource class's queue (Celery routing: workers consume the classes they serve).
    Called by `JobSender` only."""
    celery.send_task(TRAIN_TASK, args=[job_id], queue=queue_name(resource_class))


class JobSender:
    """Puts a job's message on its resource class's queue: the API's submissions, a sweep's trials, and a
    worker's re-sends (the reaper, a graceful stop) all send through one of these.

    Called with the job id alone it reads the job's class from its row (a re-send goes where the first send
    went); a caller that has the class at hand passes it and saves that read.
    """

    def __init__(self, celery: Celery, db: Database) -> None:
        self.celery = celery
        self.db = db

    def __call__(self, job_id: str, resource_class: str | None = None) -> None:
        if resource_class is None:
            with self.db.session() as s:
                resource_class = s.execute(select(Job.resource_class).where(Job.id == job_id)).scalar_one_or_none()
        enqueue_job(self.celery, job_id, resource_class or ANY)

