"""The Celery application as the API sees it: configuration and sending by task name only.

The API never imports the task's module (it would pull in TensorFlow); workers register the task on the
same app in `workers.celery_app`.
"""
from __future__ import annotations

from celery import Celery

from service.settings import Settings

TRAIN_TASK = "trainyard.train_job"
QUEUE = "trainyard"


def make_celery(settings: Settings) -> Celery:
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
            # Training runs for hours: redis must not redeliver a running job after the default 1 h.
            "visibility_timeout": 7 * 24 * 3600,
        },
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
    )
    return app


def enqueue_job(celery: Celery, job_id: str) -> None:
    celery.send_task(TRAIN_TASK, args=[job_id], queue=QUEUE)
