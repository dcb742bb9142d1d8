"""Forking a job: `POST /v1/jobs/{id}/fork` makes a new job from the parent's spec with a patch (the rules:
trainyard/forks.py), submitted like any job: the same quota, rate limit and `Idempotency-Key`
(`submit_derived`, which replays submit through too: service/api/replays.py)."""
from __future__ import annotations

import logging

from flask import Blueprint, Response, jsonify, url_for

from service.api.common import json_body, load_owned, tenant_id
from service.api.idempotency import find_replay, idempotency_key, request_sha256
from service.api.jobs import replayed_response, submit_within_quota
from service.api.representations import job_etas, job_resource, queue_positions
from service.errors import Conflict, ValidationFailed
from service.services import services
from trainyard import forks
from trainyard.datasets.lookup import dataset_lookup
from trainyard.db.models import Job
from trainyard.spec import SpecError
from trainyard.store import ArtifactMissing
from trainyard.submission import new_job

logger = logging.getLogger(__name__)

bp = Blueprint("forks", __name__)


@bp.post("/v1/jobs/<job_id>/fork")
def fork_job(job_id: str) -> tuple[Response, int, dict[str, str]]:
    svc = services()
    with svc.db.session() as s:
        # The job first: another tenant's id answers 404 whatever the body is, like every route with an id.
        parent = load_owned(s, Job, job_id)
        raw = json_body(svc.settings.max_json_bytes)
        key = idempotency_key()
        # Bound to the parent as well as the body: the same body forking another job is another request.
        body_sha256 = request_sha256({"fork_of": job_id, "body": raw}) if key else None
        if key and (earlier := find_replay(svc.db, tenant_id(), key, body_sha256 or "")) is not None:
            return replayed_response(earlier)
        try:
            request = forks.parse_request(raw)
            changes = forks.findings_patch(request, forks.finding_map(s, parent.id))
            spec, patch = forks.child_spec(parent, request, changes, datasets=dataset_lookup(s, tenant_id()),
                                           limits=svc.settings.spec_limits)
        except SpecError as exc:
            raise ValidationFailed.listing("The fork is not valid", exc.errors) from None
        try:
            source = forks.weights_source(s, parent, request)
        except forks.ForkConflict as exc:
            raise Conflict(str(exc)) from None
    applied = list(dict.fromkeys(request.finding_ids)) or None
    job = new_job(tenant_id(), spec, idempotency_key=key, request_sha256=body_sha256, parent_id=job_id,
                  parent_from=request.source, parent_patch=patch, parent_findings=applied,
                  initial_weights_epoch=source.epoch if source is not None else None)
    response = submit_derived(job, source, key, body_sha256)
    logger.info("job %s forked from %s (from %s, %d findings applied)", job.id, job_id, request.source,
                len(applied or []), extra={"job_id": job.id})
    return response


def submit_derived(job: Job, source: forks.WeightsSource | None, key: str | None,
                   body_sha256: str | None) -> tuple[Response, int, dict[str, str]]:
    """Submit a job made from another one (a fork, a replay: trainyard/replays.py) like any job, under the
    tenant's quota and its `Idempotency-Key`, starting from a copy of `source`'s weights when it is given.
    The answer is the job's (201), or the earlier job's when the key was used before."""
    svc = services()
    if source is not None:
        try:
            job.initial_weights_key = forks.copy_weights(svc.store, source, job.id, svc.settings.var_dir / "forks")
        except ArtifactMissing:
            raise Conflict(f"The weights of epoch {source.epoch} to start from are missing or damaged in the "
                           "artifact store; fork from another checkpoint, or from scratch.") from None
    queue_class, copied = job.resource_class, job.initial_weights_key
    try:
        job, replayed = submit_within_quota(job, lambda child_id: svc.send(child_id, queue_class))
    except BaseException:
        if copied:  # the job was never created: its copy of the weights goes
            svc.store.delete(copied)
        raise
    if replayed:  # a concurrent request with the same key won the race; its job has weights of its own
        if copied:
            svc.store.delete(copied)
        return replayed_response(find_replay(svc.db, tenant_id(), key or "", body_sha256 or "") or job)
    with svc.db.read_session() as s:
        positions = queue_positions(s, [job])
        body = job_resource(job, None, positions.get(job.id), job_etas(s, [job], positions).get(job.id))
    return jsonify(body), 201, {"Location": url_for("jobs.get_job", job_id=job.id)}
