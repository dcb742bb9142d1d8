"""Comparing jobs: `GET /v1/jobs/compare?ids=a,b[,...]`, 2 to 8 jobs of the caller's tenant side by side (the
rules: trainyard/compare.py). Two queries whatever the number of jobs and epochs: the jobs, then their
metric rows."""
from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from service.api.common import load_owned_many
from service.api.representations import compare_resource
from service.errors import ValidationFailed
from service.services import services
from trainyard.compare import load_epochs
from trainyard.db.models import Job

bp = Blueprint("compare", __name__)

MIN_JOBS, MAX_JOBS = 2, 8


def _ids() -> list[str]:
    """`ids`: 2 to 8 different job ids, comma-separated; a 422 at `query.ids` otherwise."""
    raw = request.args.getlist("ids")
    problem = None
    ids: list[str] = []
    if len(raw) != 1:
        problem = "Give the jobs once, comma-separated: ids=job_a,job_b." if raw else \
            f"Required: {MIN_JOBS} to {MAX_JOBS} job ids, comma-separated."
    else:
        ids = [part.strip() for part in raw[0].split(",", MAX_JOBS + 1)]
        if any(not part for part in ids):
            problem = "An empty id; separate the job ids with single commas."
        elif not MIN_JOBS <= len(ids) <= MAX_JOBS:
            problem = f"Between {MIN_JOBS} and {MAX_JOBS} job ids; got {raw[0].count(',') + 1}."
        elif len(set(ids)) != len(ids):
            problem = "Each job once: an id is repeated."
    if problem is not None:
        raise ValidationFailed(f"The query parameter 'ids' must name {MIN_JOBS} to {MAX_JOBS} different jobs.",
                               errors=[{"field": "query.ids", "message": problem}])
    return ids


@bp.get("/v1/jobs/compare")
def compare_jobs() -> Response:
    ids = _ids()
    with services().db.read_session() as s:
        jobs = load_owned_many(s, Job, ids)
        runs = load_epochs(s, ids)
        body = compare_resource(jobs, [runs[job_id] for job_id in ids])
    return jsonify(body)
