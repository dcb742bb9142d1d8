"""The caller's tenant's usage: GET /v1/usage (what is counted and how: trainyard/usage.py)."""
from __future__ import annotations

from flask import Blueprint, Response, jsonify

from service.api.common import iso, tenant_id
from service.services import services
from trainyard import usage
from trainyard.db.models import utcnow

bp = Blueprint("usage", __name__)


@bp.get("/v1/usage")
def get_usage() -> Response:
    now = utcnow()
    with services().db.read_session() as s:
        found = usage.tenant_usage(s, tenant_id(), now)
    resp = jsonify({
        "as_of": iso(now),
        "stored_bytes": found["stored_bytes"],
        "jobs": found["jobs"],
        "training_seconds": {**found["training_seconds"], "month_start": iso(found["month_start"])},
    })
    resp.headers["Cache-Control"] = "no-store"  # it changes with every job
    return resp
