"""Replaying a job: `POST /v1/jobs/{id}/replay` trains the job again with the same spec, data and seed (the
rules: trainyard/replays.py), submitted like a fork (`forks.submit_derived`): the same quota, rate limit and
`Idempotency-Key`. Its `reproduction` is written when it ends (trainyard/lifecycle.py)."""
from __future__ import annotations

import logging

from flask import Blueprint, Response, request

from service.api.common import json_body, load_owned, tenant_id
from service.api.forks import submit_derived
from service.api.idempotency import find_replay, idempotency_key, request_sha256
from service.api.jobs import replayed_response
from service.errors import Conflict, ValidationFailed
from service.services import services
from trainyard import replays
from trainyard.datasets.lookup import dataset_lookup
from trainyard.db.models import Job
from trainyard.spec import SpecError
from trainyard.submission import new_job

logger = logging.getLogger(__name__)

bp = Blueprint("replays", __name__)


def _check_empty_body() -> None:
    """The body may be absent or `{}`: a replay takes no options."""
    if not request.content_length and not request.headers.get("Transfer-Encoding"):
        return
    raw = json_body(services().settings.max_json_bytes)
    if not isinstance(raw, dict):
        raise ValidationFailed("A replay takes no options: send no body, or {}.",
                               errors=[{"field": "", "message": "Must be an empty JSON object, or no body."}])
    if raw:
        raise ValidationFailed.listing("A replay takes no options (send no body, or {})",
                                       [{"field": str(key)[:100], "message": "Unknown field; a replay takes none."}
                                        for key in list(raw)[:10]])


@bp.post("/v1/jobs/<job_id>/replay")
def replay_job(job_id: str) -> tuple[Response, int, dict[str, str]]:
    svc = services()
    with svc.db.session() as s:
        # The job first: another tenant's id answers 404 whatever the body is, like every route with an id.
        original = load_owned(s, Job, job_id)
        _check_empty_body()
        key = idempotency_key()
        # Bound to the job replayed: the same key replaying another job is another request.
        body_sha256 = request_sha256({"replay_of": job_id}) if key else None
        if key and (earlier := find_replay(svc.db, tenant_id(), key, body_sha256 or "")) is not None:
            return replayed_response(earlier)
        try:
            replays.check_replayable(original)
            spec = replays.replay_spec(original, datasets=dataset_lookup(s, tenant_id()),
                                       limits=svc.settings.spec_limits)
        except replays.ReplayConflict as exc:
            raise Conflict(str(exc)) from None
        except SpecError as exc:
            raise ValidationFailed.listing(f"Job {job_id}'s spec is no longer valid, so it cannot be replayed",
                                           exc.errors) from None
        source = replays.weights_source(original)
    job = new_job(tenant_id(), spec, idempotency_key=key, request_sha256=body_sha256, replay_of=job_id,
                  initial_weights_epoch=source.epoch if source is not None else None)
    response = submit_derived(job, source, key, body_sha256)
    logger.info("job %s replays %s", job.id, job_id, extra={"job_id": job.id})
    return response
