"""A job's own log lines, written by the worker that ran it: GET /v1/jobs/{id}/logs?after=&limit=."""
from __future__ import annotations

from flask import Blueprint, Response, jsonify
from sqlalchemy import select

from service.api.common import MAX_BIGINT, int_arg, load_owned
from service.api.representations import log_resource
from service.services import services
from trainyard.db.live import JobLog
from trainyard.db.models import Job

bp = Blueprint("logs", __name__)


@bp.get("/v1/jobs/<job_id>/logs")
def get_logs(job_id: str) -> Response:
    after = int_arg("after", 0, minimum=0, maximum=MAX_BIGINT)
    limit = int_arg("limit", 200, minimum=1, maximum=1000)
    with services().db.session() as s:
        load_owned(s, Job, job_id)
        rows = list(s.execute(
            select(JobLog).where(JobLog.job_id == job_id, JobLog.seq > after).order_by(JobLog.seq).limit(limit + 1)
        ).scalars())
    page = rows[:limit]
    return jsonify({
        "logs": [log_resource(r) for r in page],
        # Pass it back as `after` for the next page; when there is none, poll with the last seq you have.
        "next_after": page[-1].seq if len(rows) > limit else None,
    })
