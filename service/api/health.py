"""Liveness, readiness and the OpenAPI document."""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from flask import Blueprint, Response, jsonify
from sqlalchemy import func, select, text

from service.services import services
from trainyard.db.models import Worker, utcnow

bp = Blueprint("health", __name__)

OPENAPI = Path(__file__).resolve().parents[2] / "openapi.yaml"


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    svc = services()
    checks: dict[str, dict[str, object]] = {}
    try:
        with svc.db.session() as s:
            s.execute(text("SELECT 1"))
            cutoff = utcnow() - timedelta(seconds=svc.settings.worker_stale_seconds)
            if svc.settings.is_embedded:
                cutoff = cutoff.replace(tzinfo=None)
            workers = s.execute(select(func.count()).select_from(Worker).where(Worker.last_seen >= cutoff)).scalar_one()
        checks["database"] = {"ok": True}
        checks["workers"] = {"ok": workers > 0, "recently_seen": workers}
    except Exception as exc:  # readiness reports, it never raises
        checks["database"] = {"ok": False, "error": type(exc).__name__}
        checks["workers"] = {"ok": False, "recently_seen": 0}
    try:
        with svc.celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
        checks["broker"] = {"ok": True}
    except Exception as exc:
        checks["broker"] = {"ok": False, "error": type(exc).__name__}
    ready = all(c["ok"] for c in checks.values())
    return jsonify({"status": "ready" if ready else "not_ready", "checks": checks}), 200 if ready else 503


@bp.get("/openapi.yaml")
def openapi() -> Response:
    return Response(OPENAPI.read_bytes(), mimetype="application/yaml")
