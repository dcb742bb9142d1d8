"""Request rate limits per token, answered as 429 problems with `Retry-After`.

The key is the sha256 of the bearer token, so a tenant's tokens are limited one by one and the token
itself never reaches the storage; requests without a token are keyed by client address. The checks run
before authentication, so guessing tokens is throttled too. Counts live in Redis when the broker is
Redis (shared by every API process) and in the process's memory in the embedded default. When the
storage is down, requests are let through rather than failed: rate limiting must never take the API down.

Every request counts against `TRAINYARD_RATE_LIMIT`. The expensive operations count against a stricter
limit of their own as well: a submit (`POST /v1/jobs`, `POST /v1/sweeps`, `POST /v1/jobs/{id}/fork`, `.../replay`)
validates a spec, or a sweep's every trial, and an upload (`POST /v1/datasets`) is read whole and checked;
a read is one indexed query.

Each limit is a fixed window counted in the storage, but an API process does not ask the storage on every
request: it takes a *lease* of several hits at once (one atomic INCRBY) and spends it locally, so a status
poll costs no Redis round trip (`LeasedLimits`). The shared count is never exceeded: a lease is granted only
up to the limit. A lease is at most 1/LEASE_FRACTION of what the window had left (and at most MAX_LEASE
hits), so small limits (tests, the submit and upload limits of a token) are counted hit by hit, and a
process can hold back only a small part of a window from the others. Once the storage says a window is
used up, the process refuses that key locally until the window ends.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass

from flask import Flask, Response, request
from limits import RateLimitItem, parse_many
from limits.storage import Storage, storage_from_string

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

# A lease is at most this fraction of what is left of a window, and at most MAX_LEASE hits.
LEASE_FRACTION = 32
MAX_LEASE = 100
# After the storage failed, requests go through without asking it for this long (no timeout per request).
STORAGE_RETRY_SECONDS = 1.0
# Keys whose windows a process keeps; past this many, all are forgotten (leases unspent are lost: safe).
MAX_KEYS = 20_000


def rate_limit_key() -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return "token:" + hash_token(token.strip())[:32]
    return "addr:" + (request.remote_addr or "unknown")


@dataclass
class _Window:
    """This process's view of one key's current window of one limit."""

    ends_at: float  # time.time() at which the window (and any lease of it) ends
    tokens: int  # hits leased and not yet spent
    left: int  # what the shared count had left after this process's latest lease
    used_up: bool  # the shared count reached the limit: refuse until `ends_at`


class LeasedLimits:
    """Fixed-window limits counted in `storage` (shared by every process), spent locally in leases."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._windows: dict[str, _Window] = {}
        self._lock = threading.Lock()
        self._storage_down_until = 0.0

    def hit(self, item: RateLimitItem, *identifiers: str) -> float | None:
        """Count one hit of `item` for `identifiers`: None when allowed, else when the window ends (the
        time to retry). Raises whatever the storage raises (the caller lets the request through)."""
        key = item.key_for(*identifiers)
        now = time.time()
        with self._lock:
            window = self._windows.get(key)
            if window is not None and now < window.ends_at:
                if window.tokens > 0:
                    window.tokens -= 1
                    return None
                if window.used_up:
                    return window.ends_at
            else:
                window = None
        left = window.left if window is not None else item.amount
        size = max(1, min(MAX_LEASE, left // LEASE_FRACTION))
        count = self.storage.incr(key, item.get_expiry(), amount=size)
        granted = max(0, min(size, item.amount - (count - size)))
        if count == size:  # this lease opened the window
            ends_at = now + item.get_expiry()
        elif window is not None:
            ends_at = window.ends_at
        else:
            ends_at = self.storage.get_expiry(key)
        with self._lock:
            current = self._windows.get(key)
            if current is None or current.ends_at != ends_at or time.time() >= current.ends_at:
                if len(self._windows) >= MAX_KEYS:
                    self._windows.clear()
                current = self._windows[key] = _Window(ends_at, 0, item.amount, False)
            current.left = min(current.left, max(0, item.amount - count))
            if granted == 0:
                current.used_up = True
                return ends_at
            current.tokens += granted - 1
            return None

    def check(self, items: list[RateLimitItem], *identifiers: str) -> tuple[RateLimitItem, float] | None:
        """Count a hit against every limit in `items`: the first one exceeded and when its window ends, or
        None. While the storage is unavailable every request is let through."""
        if not items or time.monotonic() < self._storage_down_until:
            return None
        try:
            for item in items:
                ends_at = self.hit(item, *identifiers)
                if ends_at is not None:
                    return item, ends_at
        except Exception:  # noqa: BLE001 - whatever the storage's client raises: let requests through
            self._storage_down_until = time.monotonic() + STORAGE_RETRY_SECONDS
            logger.warning("rate-limit storage unavailable; letting requests through for %.0f s",
                           STORAGE_RETRY_SECONDS, exc_info=True)
        return None


def _too_many(limit: object, ends_at: float, what: str = "requests") -> Response:
    retry_after = max(1, math.ceil(ends_at - time.time()))
    return problem_response(TooManyRequests(
        f"Too many {what} for this token: the limit is {limit}. Retry after {retry_after} s.",
        headers={"Retry-After": str(retry_after)},
    ))


def _parse(value: str, name: str) -> list[RateLimitItem]:
    """The limits a setting names; [] when it is empty or `off`."""
    if not value or value.lower() == "off":
        return []
    try:
        return parse_many(value)
    except ValueError:
        raise SettingsError(
            f"{name} must read like '600 per minute' or '20/second;600/minute', got {value!r}") from None


def init_rate_limits(app: Flask, settings: Settings) -> LeasedLimits | None:
    """Attach the limits to `app` (before the token check is registered), or None when all are off."""
    general = _parse(settings.rate_limit, "TRAINYARD_RATE_LIMIT")
    expensive = {"submit": _parse(settings.rate_limit_submit, "TRAINYARD_RATE_LIMIT_SUBMIT"),
                 "upload": _parse(settings.rate_limit_uploads, "TRAINYARD_RATE_LIMIT_UPLOADS")}
    if not general and not any(expensive.values()):
        return None
    limits = LeasedLimits(storage_from_string(settings.ratelimit_storage_url))
    app.extensions["trainyard_rate_limits"] = limits

    @app.before_request
    def _rate_limits() -> Response | None:
        endpoint = request.endpoint or ""
        if endpoint in EXEMPT_ENDPOINTS:
            return None
        key = rate_limit_key()
        if (exceeded := limits.check(general, "trainyard", "general", key)) is not None:
            return _too_many(*exceeded)
        # The stricter limit of an expensive operation, on top of the general one.
        kind = EXPENSIVE_ENDPOINTS.get(endpoint, (None, ""))[0]
        if kind is None or request.method != "POST":
            return None
        if (exceeded := limits.check(expensive[kind], "trainyard", kind, key)) is not None:
            return _too_many(*exceeded, "submissions" if kind == "submit" else "uploads")
        return None

    return limits
