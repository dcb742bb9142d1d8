"""Jobs: submit, list, read, cancel and delete (their metrics: job_metrics.py)."""
from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, jsonify, request, url_for
from sqlalchemy import bindparam, delete, func, select, text
from sqlalchemy.orm import Session

from service.api.common import (decode_job_cursor, encode_cursor, encode_sorted_cursor, int_arg, json_body,
                                load_owned, load_owned_row, tenant_id)
from service.api.idempotency import find_replay, idempotency_key, request_sha256
from service.api.representations import (JOB_LIST_ROWS, JOB_LIST_VERSIONS, JOB_ROW_WITH_FINDINGS, JOBS_WITH_FINDINGS,
                                         VERSION_COLUMNS, children_of, job_and_counts, job_etas, job_list_items,
                                         job_list_json, job_resource, job_row_counts, job_row_recent,
                                         job_with_findings, listed, listed_forked, listed_recent, listed_version,
                                         queue_positions, running_etas, submitted_queue_and_eta)
from service.api.status_cache import list_items, status_cache
from service.errors import Conflict, PreconditionFailed, TooManyRequests, ValidationFailed
from service.services import services
from trainyard.datasets.lookup import lazy_dataset_lookup
from trainyard.db.exports import JobExport
from trainyard.db.live import JobWebhook
from trainyard.db.models import FINAL_STATUSES, JOB_STATUSES, Checkpoint, Job, Tenant, utcnow
from trainyard.spec import SpecError, validate_job_patch, validate_spec
from trainyard.spec.labels import MAX_LABELS, key_error, merge, value_error
from trainyard.spec.schema import MAX_NAME_CHARS
from trainyard import lifecycle
from trainyard.db import Database, status_sql
from trainyard.job_search import NEWEST_FIRST, SORTS, JobSearch, LabelFilter, Position, page_queries, position_of
from trainyard.labels import relabel
from trainyard.submission import new_job, submit
from trainyard.webhooks import validate_webhook

logger = logging.getLogger(__name__)

bp = Blueprint("jobs", __name__)


# How long a client told "too many active jobs" should wait: about one short job, or a cancellation.
QUOTA_RETRY_AFTER_SECONDS = 30


# Submissions of one tenant that may be between their quota count and their commit at once (fast path).
QUOTA_SLOTS = 8


class QuotaNearlyFull(Exception):
    """The fast path cannot tell: the tenant is within QUOTA_SLOTS jobs of its cap (made again exclusively)."""


# The fast path's locks in one statement: the tenant's row FOR SHARE, then (its row locked first, as the
# projection runs above the locking subquery) one of the tenant's QUOTA_SLOTS advisory locks, held to the
# commit: the first free one from a random start; NULL when all are taken.
_SHARE_AND_TAKE_SLOT = text(
    "SELECT (SELECT slot FROM generate_series(0, :slots - 1) AS g(slot) "
    "WHERE pg_try_advisory_xact_lock(hashtext(:tenant), (slot + :start) % :slots) LIMIT 1) "
    f"FROM (SELECT id FROM {Tenant.__tablename__} WHERE id = :tenant FOR SHARE) AS locked")
_WAIT_FOR_SLOT = text("SELECT pg_advisory_xact_lock(hashtext(:tenant), :start)")
_LOCK_TENANT_EXCLUSIVE = (select(Tenant.__table__.c.id).where(Tenant.__table__.c.id == bindparam("tenant"))
                          .with_for_update(key_share=True))
# The statuses written into the statement (`status_sql`): a generic plan for `status IN ($2, $3)` read the
# tenant's index through a bitmap, twice the time.
_COUNT_ACTIVE = (select(func.count()).select_from(Job.__table__)
                 .where(Job.__table__.c.tenant_id == bindparam("tenant"),
                        Job.__table__.c.status.in_([status_sql("queued"), status_sql("running")])))


def count_against_quota(session: Session, tenant: str, limit: int, *, exclusive: bool) -> None:
    """429 when the job this submission has just inserted (not yet committed) takes the tenant past `limit`
    jobs queued or running; it runs between the insert and the commit, and the count includes the job.

    On Postgres a tenant's submissions do not wait for each other on the fast path (`exclusive` False):
    the tenant's row is locked FOR SHARE, and one of QUOTA_SLOTS advisory locks is held until the commit,
    so at most QUOTA_SLOTS submissions are between their count and their commit at once, and each count
    misses at most QUOTA_SLOTS - 1 of them. A count with that margin to spare commits; one without raises
    QuotaNearlyFull, and the submission is made again exclusively: the row locked FOR NO KEY UPDATE (it
    waits for every fast submission in flight and keeps new ones out), then an exact count. The cap is never
    exceeded either way. SQLite serialises writers anyway: its count is exact.
    """
    conn = session.connection()  # Core statements, built once, on the session's transaction: no ORM per call
    postgres = conn.dialect.name == "postgresql"
    if postgres and exclusive:
        conn.execute(_LOCK_TENANT_EXCLUSIVE, {"tenant": tenant})
    elif postgres:
        where = {"tenant": tenant, "slots": QUOTA_SLOTS, "start": secrets.randbelow(QUOTA_SLOTS)}
        if conn.execute(_SHARE_AND_TAKE_SLOT, where).scalar() is None:  # all taken: wait for one
            conn.execute(_WAIT_FOR_SLOT, where)
    # A statement of its own: it sees every submission committed before the locks above were granted.
    active = conn.execute(_COUNT_ACTIVE, {"tenant": tenant}).scalar_one()
    if active > limit:
        raise TooManyRequests(
            f"This tenant already has {active - 1} jobs queued or running, the most allowed at once ({limit}). "
            "Wait for one to end, or cancel one, then submit again.",
            headers={"Retry-After": str(QUOTA_RETRY_AFTER_SECONDS)},
            extra={"active_jobs": active - 1, "limit": limit},
        )
    if postgres and not exclusive and active + QUOTA_SLOTS - 1 > limit:
        raise QuotaNearlyFull


def submit_within_quota(job: Job, send: Callable[[str], None], with_rows: Sequence[object] = ()) -> tuple[Job, bool]:
    """`submission.submit` under the tenant's active-job quota: on the fast path, and again exclusively when
    the tenant is near its cap (a cap this small is always checked exclusively)."""
    svc = services()
    tenant, limit = tenant_id(), svc.settings.max_active_jobs_per_tenant
    for exclusive in ((True,) if limit < 2 * QUOTA_SLOTS else (False, True)):
        try:
            return submit(svc.db, send, job, with_rows=with_rows,
                          after_insert=lambda s: count_against_quota(s, tenant, limit, exclusive=exclusive))
        except QuotaNearlyFull:  # rolled back, nothing sent: the same rows again, exclusively
            continue
    raise AssertionError("the exclusive check decides")


# On Postgres the status poll's row also carries the job's version (service/api/status_cache.py).
_JOB_ROW_VERSIONED = JOB_ROW_WITH_FINDINGS.add_columns(*VERSION_COLUMNS)


def job_row_with_findings(job_id: str, versioned: bool = False) -> tuple[Any, dict[str, Any], bool]:
    """One job of this tenant as a row (its columns by name, as on a Job), its finding counts and whether it
    has forks, in one round trip, without the ORM: the status poll's path. `versioned` (Postgres only): the
    row ends with the job's version columns."""
    row = load_owned_row(services().db, Job, job_id, _JOB_ROW_VERSIONED if versioned else JOB_ROW_WITH_FINDINGS)
    return row, *job_row_counts(row)


@bp.post("/v1/jobs")
def submit_job() -> tuple[Response, int, dict[str, str]]:
    svc = services()
    raw = json_body(svc.settings.max_json_bytes)
    key = idempotency_key()
    body_sha256 = request_sha256(raw) if key else None
    if key and (earlier := find_replay(svc.db, tenant_id(), key, body_sha256)) is not None:
        return replayed_response(earlier)
    # The webhook is checked on its own (it resolves the host) and kept out of the trainer's spec but
    # its URL and events; the secret goes to its own table and is never shown again.
    raw_webhook = raw.pop("webhook", None) if isinstance(raw, dict) else None
    webhook, secret, errors = (None, None, [])
    if raw_webhook is not None:
        webhook, secret, errors = validate_webhook(raw_webhook, svc.settings.webhook_allow_private)
    try:
        spec = validate_spec(raw, datasets=lazy_dataset_lookup(svc.db, tenant_id()), limits=svc.settings.spec_limits)
    except SpecError as exc:
        errors = exc.errors + errors
    if errors:
        raise ValidationFailed.listing("The job spec is not valid", errors) from None
    if webhook is not None:
        spec["webhook"] = webhook
    job = new_job(tenant_id(), spec, idempotency_key=key, request_sha256=body_sha256)
    hooks = [] if webhook is None else [JobWebhook(job_id=job.id, url=webhook["url"], events=webhook["events"],
                                                   secret=secret, epoch_events="epoch" in webhook["events"])]
    queue_class = job.resource_class
    job, replayed = submit_within_quota(job, lambda job_id: svc.send(job_id, queue_class), hooks)
    if replayed:  # a concurrent request with the same key won the race (409 if its body was different)
        return replayed_response(find_replay(svc.db, tenant_id(), key or "", body_sha256 or "") or job)
    # A job just created has no findings yet: only its queue position (and estimate) is read back.
    body = job_resource(job, None, *submitted_queue_and_eta(svc.db, job))
    return jsonify(body), 201, {"Location": url_for("jobs.get_job", job_id=job.id)}


def replayed_response(job: Job) -> tuple[Response, int, dict[str, str]]:
    # The same answer as the first request gave (which enqueued the job), marked as a replay.
    with services().db.session() as s:
        body = job_with_findings(s, s.get(Job, job.id) or job)
    return jsonify(body), 201, {"Location": url_for("jobs.get_job", job_id=job.id),
                                             "Idempotent-Replayed": "true"}


# A list request names at most this many labels (each one more index probe per row read).
MAX_LABEL_FILTERS = 8


def _query_error(field: str, message: str, detail: str) -> ValidationFailed:
    return ValidationFailed(detail, errors=[{"field": f"query.{field}", "message": message}])


def _label_filters() -> tuple[LabelFilter, ...]:
    """`label=key:value` (the job has this value) and `label=key` (it has the key), each repeatable."""
    raw = request.args.getlist("label")
    if len(raw) > MAX_LABEL_FILTERS:
        raise _query_error("label", f"At most {MAX_LABEL_FILTERS} label filters; got {len(raw)}.",
                           f"A list request takes at most {MAX_LABEL_FILTERS} label filters.")
    filters = []
    for item in raw:
        key, colon, value = item.partition(":")
        problem = key_error(key) or (value_error(value) if colon else None)
        if problem is not None:
            raise _query_error("label", f"{item[:80]!r}: {problem}",
                               "A label filter is 'key:value' or 'key', with a valid label key and value.")
        filters.append(LabelFilter(key, value if colon else None))
    return tuple(filters)


def _search() -> JobSearch:
    status = request.args.get("status")
    if status is not None and status not in JOB_STATUSES:
        raise _query_error("status", f"Must be one of: {', '.join(JOB_STATUSES)}.", f"Unknown status {status!r}.")
    name = request.args.get("name")
    if name is not None and not 1 <= len(name) <= MAX_NAME_CHARS:
        raise _query_error("name", f"Must be 1 to {MAX_NAME_CHARS} characters.",
                           f"The name filter must be 1 to {MAX_NAME_CHARS} characters.")
    sort = request.args.get("sort", NEWEST_FIRST)
    if sort not in SORTS:
        raise _query_error("sort", f"Must be one of: {', '.join(SORTS)}.", f"Unknown sort {sort[:40]!r}.")
    return JobSearch(tenant_id=tenant_id(), status=status, labels=_label_filters(), name=name, sort=sort)


@bp.get("/v1/jobs")
def list_jobs() -> Response:
    limit = int_arg("limit", 20, minimum=1, maximum=200)
    search = _search()
    svc = services()
    after = None
    if cursor := request.args.get("cursor"):
        after = decode_job_cursor(cursor, search.sort, NEWEST_FIRST)
        if search.sort == NEWEST_FIRST and svc.settings.is_embedded:
            after = (after[0].replace(tzinfo=None), after[1])
    if svc.db.engine.dialect.name == "postgresql":
        return Response(_list_page_json(svc.db, search, after, limit), mimetype="application/json")
    return jsonify(_list_page(svc.db, search, after, limit))


def _next_cursor(last: Any, search: JobSearch) -> str:
    return (encode_cursor(last.created_at, last.id) if search.sort == NEWEST_FIRST
            else encode_sorted_cursor(search.sort, *position_of(last, search.sort)))


def _list_page_json(db: Database, search: JobSearch, after: Position | None, limit: int,
                    now: datetime | None = None) -> str:
    """A page of the list as JSON text, on Postgres. Which jobs it holds, in order, and their versions come
    first (JOB_LIST_VERSIONS); an ended job this API process has a current item for is answered with it
    (status_cache.ListItems), the others are read in full, only the columns their bodies show, and their
    JSON documents spliced in as the database's text (representations.job_list_items)."""
    kept = list_items()
    tenant = search.tenant_id
    with db.read_connection() as conn:
        paged: list[Any] = []
        for stmt in page_queries(JOB_LIST_VERSIONS, search, after, limit + 1):
            paged += conn.execute(stmt.limit(limit + 1 - len(paged))).all()
            if len(paged) > limit:
                break
        page = paged[:limit]
        items = kept.current(page, tenant)
        missing = [row.id for row in page if row.id not in items]
        rows = listed(conn.execute(JOB_LIST_ROWS, {"ids": missing, "tenant_id": tenant})) if missing else []
        positions = queue_positions(conn, rows)
        recent = {row.id: listed_recent(row) for row in rows if row.status == "running"}
        etas = job_etas(conn, rows, positions, recent, now)
        children = children_of(conn, [row.id for row in rows if listed_forked(row)])
    for row, item in zip(rows, job_list_items(rows, positions, etas, children)):
        items[row.id] = item
        kept.keep(row, tenant, listed_version(row), item)
    next_cursor = _next_cursor(page[-1], search) if len(paged) > limit else None
    # A job deleted between the two reads is left out of the page.
    return job_list_json([items[row.id] for row in page if row.id in items], next_cursor)


def _list_page(db: Database, search: JobSearch, after: Position | None, limit: int,
               now: datetime | None = None) -> dict[str, Any]:
    """A page of the list through the ORM (SQLite; `_list_page_json` answers the same on Postgres)."""
    with db.read_session() as s:
        rows = []
        for stmt in page_queries(JOBS_WITH_FINDINGS, search, after, limit + 1):
            rows += [job_and_counts(row) for row in s.execute(stmt.limit(limit + 1 - len(rows)))]
            if len(rows) > limit:
                break
        page = rows[:limit]
        positions = queue_positions(s, [job for job, _, _, _ in page])
        etas = job_etas(s, [job for job, _, _, _ in page], positions,
                        {job.id: recent for job, _, _, recent in page}, now)
        children = children_of(s, [job.id for job, _, forked, _ in page if forked])
    next_cursor = _next_cursor(page[-1][0], search) if page and len(rows) > limit else None
    return {"jobs": [job_resource(job, counts, positions.get(job.id), etas.get(job.id), children.get(job.id))
                     for job, counts, _, _ in page],
            "next_cursor": next_cursor}


def _with_etag(body: dict[str, Any]) -> Response:
    # A strong validator of the exact representation: pollers send If-None-Match and get a bodiless 304
    # until something in the job changes; PATCH takes it in If-Match.
    resp = jsonify(body)
    resp.set_etag(hashlib.sha256(resp.get_data()).hexdigest()[:32])
    return resp


@bp.get("/v1/jobs/<job_id>")
def get_job(job_id: str) -> Response:
    cache = status_cache()
    if cache is not None and (resp := cache.answer(job_id, tenant_id())) is not None:  # ended, and as it was
        return _conditional(resp)
    job, findings, forked = job_row_with_findings(job_id, versioned=cache is not None)
    positions: dict[str, int] = {}
    estimate, children = None, None
    if job.status == "running":  # its latest epochs came with the row: no query more
        estimate = running_etas([job], {job.id: job_row_recent(job)}, utcnow()).get(job.id)
    if job.status == "queued" or forked:
        with services().db.read_session() as s:
            if job.status == "queued":  # its queue position, and recent run times of its class
                positions = queue_positions(s, [job])
                estimate = job_etas(s, [job], positions).get(job.id)
            if forked:
                children = children_of(s, [job.id]).get(job.id)
    # While it is queued or running, its `eta.seconds` counts down: its ETag changes with it.
    resp = _with_etag(job_resource(job, findings, positions.get(job.id), estimate, children))
    if cache is not None:
        cache.keep(job_id, tenant_id(), job.status, (*findings["by_severity"].values(), job.row_version,
                                                     job.children_sig), resp)
    return _conditional(resp)


def _conditional(resp: Response) -> Response:
    # Only a conditional request can be answered 304 (make_conditional's header parsing costs a poll ~5 %).
    if "HTTP_IF_NONE_MATCH" in request.environ or "HTTP_IF_MODIFIED_SINCE" in request.environ:
        resp = resp.make_conditional(request)
    return resp


_OWNED_JOB = select(Job.id).where(Job.id == bindparam("id"), Job.tenant_id == bindparam("tenant_id"))


@bp.patch("/v1/jobs/<job_id>")
def patch_job(job_id: str) -> Response:
    """Change a job's name and labels, whatever its status (a JSON merge patch: a label set to null goes).
    With If-Match, only if the job is still as the client last read it (412 otherwise)."""
    svc = services()
    # Another tenant's job, or an id never issued, answers 404 whatever the body (as every route does);
    # the body is read before the row is locked, so a slow client never holds the lock.
    load_owned_row(svc.db, Job, job_id, _OWNED_JOB)
    raw = json_body(svc.settings.max_json_bytes)
    try:
        changes = validate_job_patch(raw)
    except SpecError as exc:
        raise ValidationFailed.listing("The change is not valid", exc.errors) from None
    with svc.db.session() as s:
        job = load_owned(s, Job, job_id, lock=True)
        if request.headers.get("If-Match") is not None:
            current = _with_etag(job_with_findings(s, job)).get_etag()[0]
            if not request.if_match.contains(current):
                raise PreconditionFailed(
                    f"Job {job_id} changed since the ETag sent in If-Match (it is now \"{current}\"); read it "
                    "again and decide on the change from what it is now.")
        if "labels" in changes:
            labels = merge(job.labels or {}, changes["labels"])
            if len(labels) > MAX_LABELS:
                raise ValidationFailed(
                    f"A job holds at most {MAX_LABELS} labels; this change would leave it with {len(labels)}.",
                    errors=[{"field": "labels", "message": f"At most {MAX_LABELS} labels; this change would "
                                                           f"leave {len(labels)}. Remove some with null values."}])
            if labels != (job.labels or {}):
                relabel(s, job, labels)
        if "name" in changes:
            job.name = changes["name"]
        body = job_with_findings(s, job)
    return _with_etag(body)


@bp.post("/v1/jobs/<job_id>/cancel")
def cancel_job(job_id: str) -> tuple[Response, int]:
    with services().db.session() as s:
        job = load_owned(s, Job, job_id)
        if job.status in FINAL_STATUSES:
            raise Conflict(f"Job {job_id} already ended ({job.status}); there is nothing to cancel.")
        lifecycle.request_cancel(job)
        return jsonify(job_with_findings(s, job)), 202


@bp.delete("/v1/jobs/<job_id>")
def delete_job(job_id: str) -> tuple[str, int]:
    svc = services()
    with svc.db.session() as s:
        job = load_owned(s, Job, job_id)
        if job.status not in FINAL_STATUSES:
            raise Conflict(f"Job {job_id} is {job.status}; cancel it and wait for it to end before deleting it.")
        keys = list(s.execute(select(Checkpoint.artifact_key).where(Checkpoint.job_id == job_id)).scalars())
        keys += s.execute(select(JobExport.artifact_key).where(JobExport.job_id == job_id)).scalars()
        if job.backup_key:  # the last resume backup outlives the run; it goes with the job
            keys.append(job.backup_key)
        if job.initial_weights_key:  # a fork's own copy of the weights it started from
            keys.append(job.initial_weights_key)
    for key in keys:
        svc.store.delete(key)
    with svc.db.session() as s:
        s.execute(delete(Job).where(Job.id == job_id))
    return "", 204
