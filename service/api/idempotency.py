"""`Idempotency-Key` on `POST /v1/jobs`: a retried submission returns the job the first one created.

The key is scoped to the tenant (unique on tenant + key in the database) and bound to a sha256 of the
request body (canonical JSON, so formatting does not matter): the same key with another body is a 409.
Two concurrent requests with the same key race on the unique constraint; the loser answers the winner's job.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

from flask import request
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from service.db import Database
from service.db.models import Job
from service.errors import Conflict, ValidationFailed

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 200


def idempotency_key() -> str | None:
    key = request.headers.get(HEADER)
    if key is None:
        return None
    if not 1 <= len(key) <= MAX_KEY_LENGTH or not key.isprintable():
        raise ValidationFailed(
            f"The {HEADER} header must be 1 to {MAX_KEY_LENGTH} printable characters.",
            errors=[{"field": f"header.{HEADER}", "message": f"Must be 1 to {MAX_KEY_LENGTH} printable characters."}],
        )
    return key


def request_sha256(raw: Any) -> str:
    canonical = json.dumps(raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def find_replay(db: Database, tenant_id: str, key: str, sha256: str) -> Job | None:
    """The job an earlier request with this key created, or None; 409 when its body was different."""
    with db.session() as s:
        job = s.execute(
            select(Job).where(Job.tenant_id == tenant_id, Job.idempotency_key == key)
        ).scalar_one_or_none()
    if job is not None and job.request_sha256 != sha256:
        raise Conflict(f"The {HEADER} {key!r} was already used with a different request body; "
                       "use a new key for a different job.")
    return job


def insert_once(db: Database, job: Job, *with_job: object) -> tuple[Job, bool]:
    """Insert `job` (which carries its key and body hash), and `with_job` rows in the same transaction;
    return (job, replayed)."""
    try:
        with db.session() as s:
            s.add(job)
            s.flush()  # the job row first: the others point to it
            s.add_all(with_job)
        return job, False
    except IntegrityError:
        existing = find_replay(db, job.tenant_id, job.idempotency_key or "", job.request_sha256 or "")
        if existing is None:
            raise
        return existing, True
