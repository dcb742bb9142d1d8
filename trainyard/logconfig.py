"""Logging for the API and the workers, configured once at start-up (never on import).

`configure_logging(settings)` is called by gunicorn's hooks (service/gunicorn_conf.py) for the API and by
Celery's `setup_logging` signal for a worker (workers/celery_app.py). `TRAINYARD_LOG_FORMAT=json` writes
one JSON object per line: timestamp, level, logger, message, and job_id / request_id where a record
belongs to a job or a request (taken from the context variables below, or from `extra=`).
"""
from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import Any

from trainyard.settings import Settings

# Set for the duration of a request (service/api) or of a job's training (workers/tasks.py).
request_id_var: ContextVar[str | None] = ContextVar("trainyard_request_id", default=None)
job_id_var: ContextVar[str | None] = ContextVar("trainyard_job_id", default=None)

CONTEXT_FIELDS = ("job_id", "request_id")


class ContextFilter(logging.Filter):
    """Puts the current job and request ids on every record (an explicit `extra=` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "job_id", None) is None:
            record.job_id = job_id_var.get()
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        ids = " ".join(f"{n}={getattr(record, n)}" for n in CONTEXT_FIELDS if getattr(record, n, None))
        return f"{text} [{ids}]" if ids else text


def configure_logging(settings: Settings, stream: Any = None) -> None:
    """One handler on the root logger in the chosen format; gunicorn's own loggers go through it too."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        if not getattr(old, "trainyard_keep", False):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    if settings.log_format == "json":
        # gunicorn's error and access logs become JSON lines like everything else.
        for name in ("gunicorn.error", "gunicorn.access"):
            gl = logging.getLogger(name)
            gl.handlers.clear()
            gl.propagate = True
