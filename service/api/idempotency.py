"""`Idempotency-Key` on `POST /v1/jobs` and `POST /v1/sweeps`: a retry returns what the first one created.

The key is scoped to the tenant (unique on tenant + key in the database) and bound to a sha256 of the
request body (canonical JSON, so formatting does not matter): the same key with another body is a 409.
Two concurrent requests with the same key race on the unique constraint; the loser answers the winner's job.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any, TypeVar

from flask import request
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from trainyard.db import Database
from trainyard.db.models import Job
from trainyard.db.sweeps import Sweep
from service.errors import Conflict, ValidationFailed

HEADER = "Idempotency-Key"
Row = TypeVar("Row", Job, Sweep)
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


def find_replay(db: Database, tenant_id: str, key: str, sha256: str, model: type[Row] = Job) -> Row | None:
    """The job (or sweep) an earlier request with this key created, or None; 409 when its body was different."""
    with db.session() as s:
        row = s.execute(
            select(model).where(model.tenant_id == tenant_id, model.idempotency_key == key)
        ).scalar_one_or_none()
    if row is not None and row.request_sha256 != sha256:
        raise Conflict(f"The {HEADER} {key!r} was already used with a different request body; "
                       "use a new key for a different request.")
    return row


def insert_once(db: Database, row: Row,
                before_insert: Callable[[Session], None] | None = None) -> tuple[Row, bool]:
    """Insert `row` (which carries its key and body hash); return (row, replayed).

    `before_insert` runs in the inserting transaction (the per-tenant job quota check).
    """
    try:
        with db.session() as s:
            if before_insert is not None:
                before_insert(s)
            s.add(row)
        return row, False
    except IntegrityError:
        existing = find_replay(db, row.tenant_id, row.idempotency_key or "", row.request_sha256 or "", type(row))
        if existing is None:
            raise
        return existing, True
