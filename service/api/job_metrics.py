"""A job's per-epoch metrics: GET /v1/jobs/{id}/metrics?after=."""
from __future__ import annotations

from flask import Blueprint, Response
from sqlalchemy import Text, cast, select

from service.api.common import int_arg, load_owned
from service.api.representations import metrics_json
from service.services import services
from trainyard.db.models import EpochMetrics, Job

bp = Blueprint("job_metrics", __name__)


@bp.get("/v1/jobs/<job_id>/metrics")
def get_metrics(job_id: str) -> Response:
    after = int_arg("after", 0, minimum=0, maximum=10_000_000)
    with services().db.read_session() as s:
        load_owned(s, Job, job_id)
        # Each row's values as the database's JSON text, spliced into the body as they are.
        rows = s.execute(
            select(EpochMetrics.epoch, cast(EpochMetrics.values, Text))
            .where(EpochMetrics.job_id == job_id, EpochMetrics.epoch > after).order_by(EpochMetrics.epoch)
        ).all()
    return Response(metrics_json(rows), mimetype="application/json")
