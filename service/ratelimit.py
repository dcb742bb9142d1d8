"""Request rate limits per token (flask-limiter), answered as 429 problems with `Retry-After`.

The key is the sha256 of the bearer token, so a tenant's tokens are limited one by one and the token
itself never reaches the storage; requests without a token are keyed by client address. The checks run
before authentication, so guessing tokens is throttled too. Counts live in Redis when the broker is
Redis (shared by every API process) and in the process's memory in the embedded default. When the
storage is down, requests are let through rather than failed: rate limiting must never take the API down.

Every request counts against `TRAINYARD_RATE_LIMIT`. The expensive operations count against a stricter
limit of their own as well: a submit (`POST /v1/jobs`, `POST /v1/sweeps`, `POST /v1/jobs/{id}/fork`, `.../replay`)
validates a spec, or a sweep's every trial, and an upload (`POST /v1/datasets`) is read whole and checked;
a read is one indexed query.
"""
from __future__ import annotations

import logging
import math
import time

from flask import Flask, Response, request
from flask_limiter import Limiter, RateLimitExceeded, RequestLimit
from limits import RateLimitItem, parse_many

from service.auth import hash_token
from service.errors import TooManyRequests, problem_response
from trainyard.settings import Settings, SettingsError

logger = logging.getLogger(__name__)

# Liveness and readiness probes, and the API document, are never throttled.
EXEMPT_ENDPOINTS = frozenset({"health.healthz", "health.readyz", "health.openapi", "static"})
# Endpoint -> (the limit it counts against, the setting that names it). Submits of jobs, sweeps, forks and replays share one.
EXPENSIVE_ENDPOINTS: dict[str, tuple[str, str]] = {
    "jobs.submit_job": ("submit", "TRAINYARD_RATE_LIMIT_SUBMIT"),
    "sweeps.submit_sweep": ("submit", "TRAINYARD_RATE_LIMIT_SUBMIT"),
    "forks.fork_job": ("submit", "TRAINYARD_RATE_LIMIT_SUBMIT"),
    "replays.replay_job": ("submit", "TRAINYARD_RATE_LIMIT_SUBMIT"),
    "datasets.upload_dataset": ("upload", "TRAINYARD_RATE_LIMIT_UPLOADS"),
}


def rate_limit_key() -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return "token:" + hash_token(token.strip())[:32]
    return "addr:" + (request.remote_addr or "unknown")


def _too_many(limit: object, retry_after: int, what: str = "requests") -> Response:
    return problem_response(TooManyRequests(
        f"Too many {what} for this token: the limit is {limit}. Retry after {retry_after} s.",
        headers={"Retry-After": str(retry_after)},
    ))


def _breached(limit: RequestLimit) -> Response:
    retry_after = max(1, math.ceil(limit.window[0] - time.time()))  # window: (reset time, remaining)
    return _too_many(limit.limit, retry_after)


def _parse(value: str, name: str) -> list[RateLimitItem]:
    """The limits a setting names; [] when it is empty or `off`."""
    if not value or value.lower() == "off":
        return []
    try:
        return parse_many(value)
    except ValueError:
        raise SettingsError(
            f"{name} must read like '600 per minute' or '20/second;600/minute', got {value!r}") from None


def init_rate_limits(app: Flask, settings: Settings) -> Limiter | None:
    """Attach the limits to `app` (before the token check is registered), or None when all are off."""
    general = _parse(settings.rate_limit, "TRAINYARD_RATE_LIMIT")
    expensive = {"submit": _parse(settings.rate_limit_submit, "TRAINYARD_RATE_LIMIT_SUBMIT"),
                 "upload": _parse(settings.rate_limit_uploads, "TRAINYARD_RATE_LIMIT_UPLOADS")}
    if not general and not any(expensive.values()):
        return None
    limiter = Limiter(
        rate_limit_key,
        app=app,
        default_limits=[settings.rate_limit] if general else [],
        storage_uri=settings.ratelimit_storage_url,
        strategy="fixed-window",
        headers_enabled=False,
        swallow_errors=True,
        on_breach=_breached,
        key_prefix="trainyard",
    )
    limiter.request_filter(lambda: request.endpoint in EXEMPT_ENDPOINTS)

    @app.before_request
    def _expensive_operations() -> Response | None:
        # The general limit ran just before (flask-limiter's own hook); this one is stricter.
        kind = EXPENSIVE_ENDPOINTS.get(request.endpoint or "", (None, ""))[0]
        if kind is None or request.method != "POST":
            return None
        key = rate_limit_key()
        try:
            for item in expensive[kind]:
                if not limiter.limiter.hit(item, "trainyard", kind, key):
                    reset, _remaining = limiter.limiter.get_window_stats(item, "trainyard", kind, key)
                    what = "submissions" if kind == "submit" else "uploads"
                    return _too_many(item, max(1, math.ceil(reset - time.time())), what)
        except Exception:  # noqa: BLE001 - whatever the storage's client raises: let the request through
            logger.warning("rate-limit storage unavailable; letting %s through", request.endpoint, exc_info=True)
        return None

    @app.errorhandler(RateLimitExceeded)
    def _limited(err: RateLimitExceeded) -> Response:
        # More specific than the generic HTTPException handler: keep the body built in `_breached`.
        return err.response or _too_many(err.limit.limit, 1)

    return limiter
