"""HTTP API: one module per resource, all behind bearer-token auth except health, the dashboard's files,
the OpenAPI file and /metrics (service/api/hooks.py says which).

The views read the app's services through `service.services` and never import `service.app`: the app
imports this package, not the other way round.
"""
from __future__ import annotations

from flask import Blueprint, Flask

from service import web
from service.api import (cards, checkpoints, compare, datasets, diagnostics, events, forks, health, job_metrics,
                         jobs, logs, prometheus, replays, sweeps, tensorboard, usage)
from service.api.common import ApiRequest
from service.api.hooks import end_request_log, refuse_nul_in_query, require_token, start_request_log

# Every blueprint the app serves, the one list (tests/service/test_layering.py checks none is left out).
BLUEPRINTS: tuple[Blueprint, ...] = (
    health.bp, jobs.bp, job_metrics.bp, checkpoints.bp, datasets.bp, diagnostics.bp, sweeps.bp, tensorboard.bp,
    web.bp, events.bp, logs.bp, prometheus.bp, forks.bp, usage.bp, replays.bp, compare.bp, cards.bp,
)


def register_api(app: Flask) -> None:
    """The request hooks, in the order they must run, then every blueprint."""
    app.before_request(start_request_log)
    app.after_request(end_request_log)
    prometheus.install(app)  # before the token check, so refused requests are timed too
    app.request_class = ApiRequest  # uploads spooled once, to a named file the upload route stores
    app.before_request(require_token)
    app.before_request(refuse_nul_in_query)
    for bp in BLUEPRINTS:
        app.register_blueprint(bp)
