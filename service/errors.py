"""One error shape everywhere: RFC 9457 `application/problem+json`.

Every error the API returns is an `ApiError` (or is turned into one in `register_error_handlers`), so
clients parse exactly one body: `type`, `title`, `status`, `detail`, and for validation failures `errors`,
a list of `{"field": "model.layers[2].units", "message": "..."}`.
"""
from __future__ import annotations

import logging
from typing import Any

import sqlalchemy.exc
from flask import Flask, Response, json, request
from werkzeug.exceptions import HTTPException

logger = logging.getLogger(__name__)

PROBLEM_BASE = "https://trainyard.dev/problems/"
PROBLEM_JSON = "application/problem+json"


class ApiError(Exception):
    status = 500
    code = "internal_error"
    title = "Internal server error"

    def __init__(
        self,
        detail: str,
        *,
        errors: list[dict[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors
        self.headers = headers or {}
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": PROBLEM_BASE + self.code,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "instance": request.path if request else None,
        }
        if self.errors is not None:
            body["errors"] = self.errors
        body.update(self.extra)
        return body


class BadRequest(ApiError):
    status, code, title = 400, "bad_request", "Bad request"


class Unauthorized(ApiError):
    status, code, title = 401, "unauthorized", "Unauthorized"


class NotFound(ApiError):
    status, code, title = 404, "not_found", "Not found"


class MethodNotAllowed(ApiError):
    status, code, title = 405, "method_not_allowed", "Method not allowed"


class Conflict(ApiError):
    status, code, title = 409, "conflict", "Conflict"


class Gone(ApiError):
    status, code, title = 410, "artifact_missing", "Artifact missing"


class PreconditionFailed(ApiError):
    status, code, title = 412, "precondition_failed", "Precondition failed"


class LengthRequired(ApiError):
    status, code, title = 411, "length_required", "Length required"


class PayloadTooLarge(ApiError):
    status, code, title = 413, "payload_too_large", "Payload too large"


class UnsupportedMediaType(ApiError):
    status, code, title = 415, "unsupported_media_type", "Unsupported media type"


class RangeNotSatisfiable(ApiError):
    status, code, title = 416, "range_not_satisfiable", "Range not satisfiable"


class ValidationFailed(ApiError):
    status, code, title = 422, "validation_failed", "Validation failed"

    @classmethod
    def listing(cls, lead: str, errors: list[dict[str, str]]) -> "ValidationFailed":
        """A 422 for field errors: `lead` ("The job spec is not valid"), then the first three in the detail
        (and how many more), every one in `errors`."""
        detail = f"{lead}: " + "; ".join(f"{e['field'] or 'body'}: {e['message']}" for e in errors[:3])
        if len(errors) > 3:
            detail += f" (and {len(errors) - 3} more)"
        return cls(detail, errors=errors)


class TooManyRequests(ApiError):
    status, code, title = 429, "too_many_requests", "Too many requests"


class ServiceUnavailable(ApiError):
    status, code, title = 503, "service_unavailable", "Service unavailable"


def problem_response(err: ApiError) -> Response:
    resp = Response(json.dumps(err.body()), status=err.status, mimetype=PROBLEM_JSON)
    for name, value in err.headers.items():
        resp.headers[name] = value
    return resp


_HTTP_TO_API: dict[int, type[ApiError]] = {
    400: BadRequest,
    404: NotFound,
    405: MethodNotAllowed,
    413: PayloadTooLarge,
    415: UnsupportedMediaType,
    416: RangeNotSatisfiable,
}


DATABASE_RETRY_AFTER_SECONDS = 5
# The database restarting, unreachable or its pool exhausted: the server's passing trouble, not a bug.
DATABASE_UNAVAILABLE: tuple[type[Exception], ...] = (
    sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError, sqlalchemy.exc.TimeoutError)


def database_unavailable() -> ServiceUnavailable:
    return ServiceUnavailable(
        "The database is unavailable for the moment; nothing was changed. Try again shortly.",
        headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)})


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(err: ApiError) -> Response:
        return problem_response(err)

    @app.errorhandler(HTTPException)
    def _http_error(err: HTTPException) -> Response:
        cls = _HTTP_TO_API.get(err.code or 500)
        if cls is None:
            cls = type("HttpError", (ApiError,), {"status": err.code or 500, "code": "http_error",
                                                  "title": err.name})
        detail = err.description or err.name
        if err.code == 404:
            detail = f"There is no resource at {request.path}."
        elif err.code == 405:
            detail = f"{request.method} is not allowed on {request.path}."
        elif err.code == 413:
            detail = "The request body is larger than this server accepts."
        api_err = cls(detail)
        resp = problem_response(api_err)
        if err.code == 405 and hasattr(err, "valid_methods") and err.valid_methods:
            resp.headers["Allow"] = ", ".join(err.valid_methods)
        return resp

    def _database_down(err: Exception) -> Response:
        # Say so, and when to try again. Nothing was accepted (every write is one transaction that did
        # not commit).
        logger.warning("database unavailable on %s %s: %s", request.method, request.path,
                       str(err).splitlines()[0][:300])
        return problem_response(database_unavailable())

    for exc_type in DATABASE_UNAVAILABLE:
        app.register_error_handler(exc_type, _database_down)

    @app.errorhandler(Exception)
    def _unexpected(err: Exception) -> Response:
        # The traceback goes to the log, never to the client.
        logger.exception("unhandled error on %s %s", request.method, request.path)
        return problem_response(ApiError("Something went wrong on our side; the error has been logged."))
