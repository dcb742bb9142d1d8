"""Request rate limits per token (flask-limiter), answered as 429 problems with `Retry-After`.

The key is the sha256 of the bearer token, so a tenant's tokens are limited one by one and the token
itself never reaches the storage; requests without a token are keyed by client address. The check runs
before authentication, so guessing tokens is throttled too. Counts live in Redis when the broker is
Redis (shared by every API process) and in the process's memory in the embedded default. When the
storage is down, requests are let through rather than failed: rate limiting must never take the API down.
"""
from __future__ import annotations

import math
import time

from flask import Flask, Response, request
from flask_limiter import Limiter, RateLimitExceeded, RequestLimit
from limits import parse_many

from service.auth import hash_token
from service.errors import TooManyRequests, problem_response
from service.settings import Settings, SettingsError

# Liveness and readiness probes, and the API document, are never throttled.
EXEMPT_ENDPOINTS = frozenset({"health.healthz", "health.readyz", "health.openapi", "static"})


def rate_limit_key() -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return "token:" + hash_token(token.strip())[:32]
    return "addr:" + (request.remote_addr or "unknown")


def _breached(limit: RequestLimit) -> Response:
    retry_after = max(1, math.ceil(limit.window[0] - time.time()))  # window: (reset time, remaining)
    return problem_response(TooManyRequests(
        f"Too many requests for this token: the limit is {limit.limit}. Retry after {retry_after} s.",
        headers={"Retry-After": str(retry_after)},
    ))


def init_rate_limits(app: Flask, settings: Settings) -> Limiter | None:
    """Attach the limiter to `app` (before the token check is registered), or None when turned off."""
    if not settings.rate_limit or settings.rate_limit.lower() == "off":
        return None
    try:
        parse_many(settings.rate_limit)
    except ValueError:
        raise SettingsError(
            f"TRAINYARD_RATE_LIMIT must read like '600 per minute' or '20/second;600/minute', got "
            f"{settings.rate_limit!r}"
        ) from None
    limiter = Limiter(
        rate_limit_key,
        app=app,
        default_limits=[settings.rate_limit],
        storage_uri=settings.ratelimit_storage_url,
        strategy="fixed-window",
        headers_enabled=False,
        swallow_errors=True,
        on_breach=_breached,
        key_prefix="trainyard",
    )
    limiter.request_filter(lambda: request.endpoint in EXEMPT_ENDPOINTS)

    @app.errorhandler(RateLimitExceeded)
    def _too_many(err: RateLimitExceeded) -> Response:
        # More specific than the generic HTTPException handler: keep the body built in `_breached`.
        return err.response or problem_response(TooManyRequests(
            f"Too many requests for this token: the limit is {err.limit.limit}.", headers={"Retry-After": "1"}))

    return limiter
