"""Sweeps: submit a search over job specs, list them, read one with its trials ranked, cancel, resume or extend one."""
from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, jsonify, request, url_for
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from service.api.common import decode_cursor, encode_cursor, int_arg, json_body, load_owned, tenant_id
from service.api.idempotency import find_replay, idempotency_key, insert_once, request_sha256
from service.api.representations import sweep_resource
from service.errors import Conflict, ValidationFailed
from service.services import services
from trainyard.datasets.lookup import dataset_lookup
from trainyard.db.sweeps import SWEEP_STATUSES, Sweep
from trainyard.sweeps import controller
from trainyard.sweeps.config import SweepError, validate_sweep

logger = logging.getLogger(__name__)

bp = Blueprint("sweeps", __name__)


def _send(job_id: str) -> None:
    # A trial goes to its resource class's queue, like any job (the base spec's `resources`).
    services().send(job_id)


def _detail(session: Session, sweep: Sweep) -> dict[str, Any]:
    ranked = controller.ranked_trials(session, sweep)
    counts = controller.status_counts(session, [sweep.id])[sweep.id]
    results = controller.results(session, sweep, [job for _, job in ranked])
    return sweep_resource(sweep, counts, ranked, controller.best_trial(ranked), results)


@bp.post("/v1/sweeps")
def submit_sweep() -> tuple[Response, int, dict[str, str]]:
    svc = services()
    raw = json_body(svc.settings.max_json_bytes)
    key = idempotency_key()
    body_sha256 = request_sha256(raw) if key else None
    sweep = find_replay(svc.db, tenant_id(), key, body_sha256 or "", Sweep) if key else None
    replayed = sweep is not None
    if sweep is None:
        with svc.db.session() as s:
            try:
                config = validate_sweep(raw, datasets=dataset_lookup(s, tenant_id()), limits=svc.settings.spec_limits,
                                        max_trials_limit=svc.settings.max_sweep_trials)
            except SweepError as exc:
                raise ValidationFailed.listing("The sweep is not valid", exc.errors) from None
        sweep, replayed = insert_once(svc.db, controller.new_sweep(
            tenant_id(), config, idempotency_key=key, request_sha256=body_sha256))
    sweep_id = sweep.id
    # Submits the first `parallelism` trials (a replay finds them submitted: top_up is idempotent).
    controller.top_up(svc.db, _send, sweep_id, svc.settings.spec_limits)
    headers = {"Location": url_for("sweeps.get_sweep", sweep_id=sweep_id)}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    with svc.db.session() as s:
        return jsonify(_detail(s, load_owned(s, Sweep, sweep_id))), 201, headers


@bp.get("/v1/sweeps")
def list_sweeps() -> Response:
    limit = int_arg("limit", 20, minimum=1, maximum=200)
    status = request.args.get("status")
    if status is not None and status not in SWEEP_STATUSES:
        raise ValidationFailed(
            f"Unknown status {status!r}.",
            errors=[{"field": "query.status", "message": f"Must be one of: {', '.join(SWEEP_STATUSES)}."}],
        )
    stmt = select(Sweep).where(Sweep.tenant_id == tenant_id())
    if status:
        stmt = stmt.where(Sweep.status == status)
    svc = services()
    if cursor := request.args.get("cursor"):
        created, sweep_id = decode_cursor(cursor, "swp")
        if svc.settings.is_embedded:
            created = created.replace(tzinfo=None)
        stmt = stmt.where(or_(Sweep.created_at < created, and_(Sweep.created_at == created, Sweep.id < sweep_id)))
    stmt = stmt.order_by(Sweep.created_at.desc(), Sweep.id.desc()).limit(limit + 1)
    with svc.db.session() as s:
        rows = list(s.execute(stmt).scalars())
        page = rows[:limit]
        counts = controller.status_counts(s, [w.id for w in page])
    next_cursor = encode_cursor(page[-1].created_at, page[-1].id) if len(rows) > limit else None
    return jsonify({"sweeps": [sweep_resource(w, counts[w.id]) for w in page], "next_cursor": next_cursor})


@bp.get("/v1/sweeps/<sweep_id>")
def get_sweep(sweep_id: str) -> Response:
    with services().db.session() as s:
        return jsonify(_detail(s, load_owned(s, Sweep, sweep_id)))


@bp.post("/v1/sweeps/<sweep_id>/cancel")
def cancel_sweep(sweep_id: str) -> tuple[Response, int]:
    with services().db.session() as s:
        sweep = load_owned(s, Sweep, sweep_id, lock=True)
        if sweep.status != "running":
            raise Conflict(f"Sweep {sweep_id} already ended ({sweep.status}); there is nothing to cancel.")
        controller.cancel(s, sweep)
        s.flush()
        return jsonify(_detail(s, sweep)), 202


@bp.patch("/v1/sweeps/<sweep_id>")
def extend_sweep(sweep_id: str) -> Response:
    """A larger `max_trials`: a running sweep runs more trials, a finished one runs again."""
    svc = services()
    with svc.db.session() as s:
        sweep = load_owned(s, Sweep, sweep_id, lock=True)  # another tenant's sweep is a 404 whatever the body
        raw = json_body(svc.settings.max_json_bytes)
        if not isinstance(raw, dict):
            raise ValidationFailed.listing("The change is not valid", [{"field": "", "message": "Must be a JSON object."}])
        errors = [{"field": k, "message": "Unknown field; only max_trials can change."} for k in raw if k != "max_trials"]
        if sweep.status == "cancelled":
            raise Conflict(f"Sweep {sweep_id} was cancelled; resume it (POST /v1/sweeps/{sweep_id}/resume) first.")
        errors += controller.extension_errors(sweep, raw.get("max_trials"), svc.settings.max_sweep_trials)
        if errors:
            raise ValidationFailed.listing("The change is not valid", errors)
        controller.extend(sweep, raw["max_trials"])
    controller.top_up(svc.db, _send, sweep_id, svc.settings.spec_limits)
    with svc.db.session() as s:
        return jsonify(_detail(s, load_owned(s, Sweep, sweep_id)))


@bp.post("/v1/sweeps/<sweep_id>/resume")
def resume_sweep(sweep_id: str) -> tuple[Response, int]:
    """A cancelled sweep continues: new trials take the place of its cancelled ones."""
    svc = services()
    with svc.db.session() as s:
        sweep = load_owned(s, Sweep, sweep_id, lock=True)
        if sweep.status != "cancelled":
            raise Conflict(f"Sweep {sweep_id} is {sweep.status}; only a cancelled sweep resumes "
                           "(PATCH max_trials extends a running or finished one).")
        controller.resume(sweep)
    controller.top_up(svc.db, _send, sweep_id, svc.settings.spec_limits)
    with svc.db.session() as s:
        return jsonify(_detail(s, load_owned(s, Sweep, sweep_id))), 202
