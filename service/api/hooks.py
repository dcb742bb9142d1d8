"""What runs around every API request: a request id for the logs, and the bearer-token check."""
from __future__ import annotations

import re
import uuid

from flask import Response, g, request

from service.auth import authenticate_cached
from service.errors import Unauthorized, ValidationFailed
from service.services import services
from trainyard.logconfig import request_id_var

# The dashboard's page and assets load without a token: the page asks for one and sends it on API calls.
# /metrics has its own rule (service/api/prometheus.py): open, off, or a separate scrape token.
PUBLIC_ENDPOINTS = {"health.healthz", "health.readyz", "health.openapi", "static", "web.index", "web.static",
                    "prometheus.scrape"}


def bearer_token() -> str:
    """The request's bearer token, or "" when it sent none (or another scheme)."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def require_token() -> None:
    if request.endpoint in PUBLIC_ENDPOINTS or request.endpoint is None:
        return
    token = bearer_token()
    if not token:
        raise Unauthorized(
            "Send an API token as 'Authorization: Bearer <token>'; `make run` prints one and writes it to "
            "var/dev-token.",
            headers={"WWW-Authenticate": 'Bearer realm="trainyard"'},
        )
    svc = services()
    principal = authenticate_cached(svc.db, svc.tokens, token)
    if principal is None:
        raise Unauthorized(
            "This token is not valid: it is unknown or was revoked.",
            headers={"WWW-Authenticate": 'Bearer realm="trainyard", error="invalid_token"'},
        )
    g.principal = principal


def refuse_nul_in_query() -> None:
    """A NUL character in a query parameter is a 422 naming it. PostgreSQL's text cannot hold one, so a filter
    carrying it (`?name=%00`) would otherwise fail in the driver as a 500; no parameter has a use for it."""
    for name, value in request.args.items(multi=True):
        if "\x00" in value or "\x00" in name:
            field = name.replace("\x00", "")[:40] or "?"
            raise ValidationFailed(f"The query parameter {field!r} contains a NUL character.",
                                   errors=[{"field": f"query.{field}", "message": "Must not contain NUL (\\u0000)."}])


_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def start_request_log() -> None:
    # A caller's X-Request-ID (when sane) ties our log lines to theirs; otherwise we make one up.
    given = request.headers.get("X-Request-ID", "")
    g.request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
    request_id_var.set(g.request_id)


def end_request_log(resp: Response) -> Response:
    if "request_id" in g:
        resp.headers["X-Request-ID"] = g.request_id
    return resp
