"""Typed errors for the Trainyard client, built from the API's RFC 9457 problem documents.

Every error response of the API is `application/problem+json` with `type`, `title`, `status`, `detail`
and, for validation failures, `errors` (a list of `{"field", "message"}`). `raise_for_problem` turns one
into the exception class for its status, so callers catch `NotFound` or `ValidationError` rather than
inspecting status codes.
"""
from __future__ import annotations

from typing import Any

import requests


class TrainyardError(Exception):
    """Any error the API answered with, or that kept the client from getting an answer."""

    def __init__(self, title: str, detail: str = "", *, status: int | None = None, type: str | None = None,
                 errors: list[dict[str, str]] | None = None, body: dict[str, Any] | None = None) -> None:
        super().__init__(f"{title} ({status}): {detail}" if status else f"{title}: {detail}")
        self.title = title
        self.detail = detail
        self.status = status
        self.type = type
        self.errors: list[dict[str, str]] = errors or []
        self.body: dict[str, Any] = body or {}


class ValidationError(TrainyardError):
    """422: the request was well-formed but invalid; `errors` names each field."""


class NotFound(TrainyardError):
    """404: no such job or data set for this token's tenant."""


class Unauthorized(TrainyardError):
    """401: no token, or an unknown or revoked one."""


class Conflict(TrainyardError):
    """409: the resource is not in a state that allows this (e.g. cancelling a finished job)."""


class PreconditionFailed(TrainyardError):
    """412: the job changed since the ETag sent in If-Match; read it again."""


class PayloadTooLarge(TrainyardError):
    """413: the body is larger than the server accepts."""


class ServerError(TrainyardError):
    """5xx: the server failed; details are in its log, not here."""


class ConnectionFailed(TrainyardError):
    """No HTTP answer at all: connection refused, DNS failure, or a timeout."""


class ChecksumMismatch(TrainyardError):
    """A downloaded checkpoint's SHA-256 does not match what the server said it is."""


class JobFailed(TrainyardError):
    """`wait(..., raise_on_failure=True)` saw the job end as `failed` or `cancelled`; `.job` is its last state."""

    def __init__(self, job: dict[str, Any]) -> None:
        error = job.get("error") or {}
        detail = error.get("message") or f"stop reason: {job.get('stop_reason')}"
        super().__init__(f"Job {job.get('status')}", detail, type=error.get("code"))
        self.job = job


_BY_STATUS: dict[int, type[TrainyardError]] = {
    401: Unauthorized,
    404: NotFound,
    409: Conflict,
    412: PreconditionFailed,
    413: PayloadTooLarge,
    422: ValidationError,
}


def error_for_response(resp: requests.Response) -> TrainyardError:
    """The typed error for a non-2xx response; tolerates bodies that are not problem documents (proxies)."""
    body: dict[str, Any] = {}
    try:
        parsed = resp.json()
        if isinstance(parsed, dict):
            body = parsed
    except ValueError:
        pass
    status = resp.status_code
    cls = _BY_STATUS.get(status, ServerError if status >= 500 else TrainyardError)
    title = body.get("title") or resp.reason or "HTTP error"
    detail = body.get("detail") or (resp.text[:200].strip() if not body else "")
    errors = body.get("errors") if isinstance(body.get("errors"), list) else None
    return cls(title, detail, status=status, type=body.get("type"), errors=errors, body=body)
