"""HTTP API: one module per resource, all behind bearer-token auth except health and the OpenAPI file."""
from __future__ import annotations

from flask import Flask, g, request

from service.app import services
from service.auth import authenticate_cached
from service.errors import Unauthorized

PUBLIC_ENDPOINTS = {"health.healthz", "health.readyz", "health.openapi", "static"}


def _require_token() -> None:
    if request.endpoint in PUBLIC_ENDPOINTS or request.endpoint is None:
        return
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized(
            "Send an API token as 'Authorization: Bearer <token>'; `make run` prints one and writes it to "
            "var/dev-token.",
            headers={"WWW-Authenticate": 'Bearer realm="trainyard"'},
        )
    svc = services()
    principal = authenticate_cached(svc.db, svc.tokens, token.strip())
    if principal is None:
        raise Unauthorized(
            "This token is not valid: it is unknown or was revoked.",
            headers={"WWW-Authenticate": 'Bearer realm="trainyard", error="invalid_token"'},
        )
    g.principal = principal


def register_blueprints(app: Flask) -> None:
    from service.api import checkpoints, datasets, diagnostics, health, jobs

    from service.api.common import ApiRequest

    app.request_class = ApiRequest
    app.before_request(_require_token)
    for module in (health, jobs, checkpoints, datasets, diagnostics):
        app.register_blueprint(module.bp)
