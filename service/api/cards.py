"""A job's model card: `GET /v1/jobs/{id}/card`, the document every export archive carries as `card.json`.

Built from the rows by `trainyard.cards` (the worker builds the exports' copies with the same function),
plus what only the API knows once the job has ended: the exports that were made, their sizes, digests
and the seconds each took, with their download links.
"""
from __future__ import annotations

from flask import Blueprint, Response, jsonify, url_for
from sqlalchemy import select

from service.api.common import load_owned
from service.errors import Conflict, NotFound
from service.services import services
from trainyard import cards
from trainyard.db.exports import EXPORT_FORMATS, JobExport
from trainyard.db.models import FINAL_STATUSES, Job

bp = Blueprint("cards", __name__)


@bp.get("/v1/jobs/<job_id>/card")
def get_card(job_id: str) -> Response:
    with services().db.read_session() as s:
        job = load_owned(s, Job, job_id)
        if job.status not in FINAL_STATUSES:
            raise Conflict(f"Job {job_id} is {job.status}; its card describes the model it ends with, and is "
                           "made when it has ended.")
        if job.best_epoch is None:
            raise NotFound(f"Job {job_id} ended ({job.status}) without a checkpoint: there is no model to "
                           "describe.")
        card = cards.model_card(s, job)
        phases = (job.model_info or {}).get("timings") or {}
        rows = s.execute(select(JobExport).where(JobExport.job_id == job_id)).scalars()
        # Only exports of the final best checkpoint of a job that succeeded are served (checkpoints._export).
        made = {r.format: r for r in rows if job.status == "succeeded" and r.epoch == job.best_epoch}
        card["exports"] = [
            {"format": fmt, "epoch": row.epoch, "size": row.size_bytes, "sha256": row.sha256,
             "seconds": phases.get(f"export_{fmt.replace('-', '_')}"),
             "links": {"download": url_for("checkpoints.download_best", job_id=job_id, format=fmt)}}
            for fmt in EXPORT_FORMATS if (row := made.get(fmt)) is not None
        ]
        card["links"] = {"self": url_for("cards.get_card", job_id=job_id),
                         "job": url_for("jobs.get_job", job_id=job_id)}
    return jsonify(card)
