"""A job's training diagnostics: per-epoch dynamics of every trainable variable, and findings."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify
from sqlalchemy import select

from service.api.common import int_arg, iso
from service.api.jobs import SEVERITIES, load_job
from service.app import services
from trainyard.db.models import EpochDiagnostics, Finding

bp = Blueprint("diagnostics", __name__)

SEVERITY_ORDER = {severity: rank for rank, severity in enumerate(SEVERITIES)}
VARIABLE_FIELDS = ("layer", "name", "grad_norm", "weight_norm", "update_norm", "update_ratio",
                   "zero_grad_fraction")


def finding_resource(f: Finding) -> dict[str, Any]:
    return {
        "code": f.code,
        "severity": f.severity,
        "message": f.message,
        "evidence": f.evidence,
        "layer": f.layer or None,  # stored as "" for model-wide findings
        "epoch": f.epoch,
        "suggested_change": f.suggested_change,
        "updated_at": iso(f.updated_at),
    }


@bp.get("/v1/jobs/<job_id>/diagnostics")
def get_diagnostics(job_id: str) -> Response:
    after = int_arg("after", 0, minimum=0, maximum=10_000_000)
    with services().db.session() as s:
        job = load_job(s, job_id)
        variables = (job.model_info or {}).get("variables") or []
        rows = s.execute(
            select(EpochDiagnostics)
            .where(EpochDiagnostics.job_id == job_id, EpochDiagnostics.epoch > after)
            .order_by(EpochDiagnostics.epoch)
        ).scalars()
        epochs = [{
            "epoch": r.epoch,
            "learning_rate": r.learning_rate,
            "loss": r.loss,
            "variables": [{k: v.get(k) for k in VARIABLE_FIELDS} for v in r.variables],
        } for r in rows]
        findings = sorted(
            (finding_resource(f) for f in s.execute(select(Finding).where(Finding.job_id == job_id)).scalars()),
            key=lambda f: (SEVERITY_ORDER.get(f["severity"], 3), f["epoch"] or 0, f["code"], f["layer"] or ""),
        )
    return jsonify({"variables": variables, "epochs": epochs, "findings": findings})
