"""A job's training diagnostics: per-epoch dynamics of every trainable variable, and findings."""
from __future__ import annotations

from flask import Blueprint, Response, jsonify
from sqlalchemy import select

from service.api.common import int_arg, load_owned
from service.api.representations import diagnostics_epoch, findings_ranked
from service.services import services
from trainyard.db.models import EpochDiagnostics, Finding, Job

bp = Blueprint("diagnostics", __name__)


@bp.get("/v1/jobs/<job_id>/diagnostics")
def get_diagnostics(job_id: str) -> Response:
    after = int_arg("after", 0, minimum=0, maximum=10_000_000)
    with services().db.session() as s:
        job = load_owned(s, Job, job_id)
        info = job.model_info or {}
        variables = info.get("variables") or []
        # diagnostics.lr_range_test or optimizer.learning_rate "auto": the sweep's curve and suggested rate.
        range_test = info.get("lr_range_test")
        rows = s.execute(
            select(EpochDiagnostics)
            .where(EpochDiagnostics.job_id == job_id, EpochDiagnostics.epoch > after)
            .order_by(EpochDiagnostics.epoch)
        ).scalars()
        epochs = [diagnostics_epoch(r) for r in rows]
        findings = findings_ranked(s.execute(select(Finding).where(Finding.job_id == job_id)).scalars())
    return jsonify({"variables": variables, "epochs": epochs, "findings": findings, "lr_range_test": range_test})
