"""Prometheus metrics at GET /metrics (text exposition format).

- `trainyard_http_request_duration_seconds{endpoint,method,status}`: API latency, observed in every
  gunicorn worker; under gunicorn, prometheus_client's multiprocess mode merges the workers' files
  (bin/api points PROMETHEUS_MULTIPROC_DIR at a folder under the var dir, emptied at start-up).
- `trainyard_jobs{status}`, `trainyard_queue_depth{queue}`, `trainyard_epoch_duration_seconds`,
  `trainyard_webhook_deliveries{state}`: read from the database and the broker at scrape time, so every
  worker answers the same and nothing is lost on restart.

Open by default; `TRAINYARD_METRICS_ENABLED=false` turns it off (404) and `TRAINYARD_METRICS_TOKEN` makes
it require `Authorization: Bearer <that token>` (not an API token: scrapers do not belong to a tenant).
"""
from __future__ import annotations

import hmac
import logging
import os
import time
from collections.abc import Callable, Iterator
from functools import lru_cache

from flask import Blueprint, Flask, Response, g, request
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import case, create_engine, func, select, text

from service.services import Services, services
from trainyard.db.live import WebhookDelivery
from trainyard.db.models import JOB_STATUSES, EpochMetrics, Job
from service.errors import NotFound, Unauthorized
from trainyard.queue import QUEUE

logger = logging.getLogger(__name__)

bp = Blueprint("prometheus", __name__)

EPOCH_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)


@lru_cache(maxsize=1)
def request_seconds() -> Histogram:
    # registry=None: registered per scrape below, so several apps in one process (tests) do not clash.
    return Histogram("trainyard_http_request_duration_seconds", "API request latency until the response starts",
                     ["endpoint", "method", "status"], registry=None)


def install(app: Flask) -> None:
    """Time every request (the streams of /events until their headers are sent); install it before the
    token check so refused requests count too."""

    @app.before_request
    def _start() -> None:
        g.metrics_started = time.perf_counter()

    @app.after_request
    def _observe(resp: Response) -> Response:
        started = g.get("metrics_started")
        if started is not None:
            rule = request.url_rule.rule if request.url_rule is not None else "(unmatched)"
            request_seconds().labels(rule, request.method, str(resp.status_code)).observe(time.perf_counter() - started)
        return resp


class DatabaseCollector(Collector):
    def __init__(self, svc: Services) -> None:
        self.svc = svc

    def collect(self) -> Iterator[Metric]:
        with self.svc.db.session() as s:
            by_status = dict(s.execute(select(Job.status, func.count()).group_by(Job.status)).all())
            seconds = EpochMetrics.values["seconds"].as_float()
            row = s.execute(select(
                func.count(seconds), func.coalesce(func.sum(seconds), 0.0),
                *[func.coalesce(func.sum(case((seconds <= b, 1), else_=0)), 0) for b in EPOCH_BUCKETS],
            )).one()
            deliveries = dict(s.execute(
                select(WebhookDelivery.state, func.count()).group_by(WebhookDelivery.state)).all())
        jobs = GaugeMetricFamily("trainyard_jobs", "Jobs by status", labels=["status"])
        for status in JOB_STATUSES:
            jobs.add_metric([status], by_status.get(status, 0))
        yield jobs
        count, total, *cumulative = row
        epochs = HistogramMetricFamily("trainyard_epoch_duration_seconds",
                                       "Wall-clock seconds of each recorded training epoch")
        epochs.add_metric([], [(str(float(b)), int(c)) for b, c in zip(EPOCH_BUCKETS, cumulative)]
                          + [("+Inf", int(count))], float(total))
        yield epochs
        hooks = GaugeMetricFamily("trainyard_webhook_deliveries", "Webhook deliveries by state", labels=["state"])
        for state in ("pending", "delivered", "failed"):
            hooks.add_metric([state], deliveries.get(state, 0))
        yield hooks
        depth = queue_depth(self.svc.settings.broker_url)
        if depth is not None:
            queue = GaugeMetricFamily("trainyard_queue_depth", "Messages waiting in the broker's queue",
                                      labels=["queue"])
            queue.add_metric([QUEUE], depth)
            yield queue


@lru_cache(maxsize=4)
def _depth_reader(broker_url: str) -> Callable[[], int] | None:
    if broker_url.startswith(("redis://", "rediss://")):
        import redis

        client = redis.Redis.from_url(broker_url, socket_timeout=2)

        def redis_depth() -> int:
            # kombu keeps one list per priority step: "trainyard", "trainyard\x06\x163", ...
            return sum(client.llen(k) for k in client.scan_iter(match=f"{QUEUE}*", count=1000)
                       if client.type(k) == b"list")

        return redis_depth
    if broker_url.startswith("sqla+"):
        engine = create_engine(broker_url.removeprefix("sqla+"))

        def sqla_depth() -> int:
            with engine.connect() as conn:
                return conn.execute(text(
                    "SELECT count(*) FROM kombu_message m JOIN kombu_queue q ON q.id = m.queue_id "
                    "WHERE q.name = :queue AND m.visible"), {"queue": QUEUE}).scalar_one()

        return sqla_depth
    return None


def queue_depth(broker_url: str) -> int | None:
    reader = _depth_reader(broker_url)
    if reader is None:
        return None
    try:
        return reader()
    except Exception:  # the broker is down, or the embedded one has not created its tables yet
        logger.warning("could not read the queue depth", exc_info=True)
        return None


@bp.get("/metrics")
def scrape() -> Response:
    svc = services()
    if not svc.settings.metrics_enabled:
        raise NotFound("Metrics are turned off on this server (TRAINYARD_METRICS_ENABLED).")
    if svc.settings.metrics_token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip(), svc.settings.metrics_token):
            raise Unauthorized("Send the metrics token as 'Authorization: Bearer <token>'.",
                               headers={"WWW-Authenticate": 'Bearer realm="trainyard-metrics"'})
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(request_seconds())
    registry.register(DatabaseCollector(svc))
    return Response(generate_latest(registry), mimetype="text/plain; version=0.0.4")
