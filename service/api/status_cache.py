"""Status polls of ended jobs: the response kept per API process, checked against the database on every poll.

A job that has ended (succeeded, failed, cancelled) still changes now and then - PATCH renames or relabels
it, a fork adds a child, a later fork's end settles one of its findings - so nothing here is served on
trust. Each poll of a job seen ended before reads its *version* in one narrow query, through the same
tenant filter as the full read (another tenant's or a deleted job is the same 404): the row's `xmin` (the
transaction that wrote this version of the row; any UPDATE writes a new one), its finding counts per
severity and a signature of its forks' ids. When that equals the version stored with the response, the
stored bytes and ETag are answered without reading the row's 53 columns, decoding its JSON documents and
encoding the body again (on Postgres about a third of a poll's CPU; see bench/README.md).

The version is read in the same statement as the row when the response is built, so a stored response is
never older than its version; the fork ids, read in a second query, can only be newer, which costs one
rebuild, never a stale answer. Jobs that are queued or running are never stored (their queue position and
ETA change with time and with other jobs). SQLite (the embedded mode) has no `xmin`: nothing is stored.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, NamedTuple

from flask import Response, current_app, request
from sqlalchemy import Text, bindparam, func, literal_column, select

from service.api.representations import per_severity_counts
from service.services import services
from trainyard.db.models import FINAL_STATUSES, Job

# Entries per API process; a status body is 2-4 kB, so this bounds the cache at a few MB.
MAX_ENTRIES = 2048

_CHILD = Job.__table__.alias("version_child")
# The forks' ids as "count:sum of hashtext(id)": any child added or deleted changes it.
_CHILDREN_SIGNATURE = (select(func.count().cast(Text) + ":"
                              + func.coalesce(func.sum(func.hashtext(_CHILD.c.id)), 0).cast(Text))
                       .where(_CHILD.c.parent_id == Job.id).correlate(Job).scalar_subquery())
VERSION_COLUMNS = (literal_column("jobs.xmin::text").label("row_version"), _CHILDREN_SIGNATURE.label("children_sig"))
# The poll of a job stored ended: its status and version only. Takes `id` and `tenant_id`.
JOB_VERSION = select(Job.status, *per_severity_counts(), *VERSION_COLUMNS).where(
    Job.id == bindparam("id"), Job.tenant_id == bindparam("tenant_id"))


class Stored(NamedTuple):
    tenant: str
    script_root: str
    version: tuple[Any, ...]
    body: bytes
    etag: str


class StatusCache:
    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[str, Stored] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0  # answered from a stored response (read by tests and the benchmark's notes)

    def stored(self, job_id: str) -> Stored | None:
        return self._entries.get(job_id)

    def answer(self, job_id: str, tenant: str, version_row: Any) -> Response | None:
        """The stored response when `version_row` (a JOB_VERSION row) says the job is as it was; else None
        (and the entry goes: the caller rebuilds it)."""
        entry = self._entries.get(job_id)
        if entry is None:
            return None
        status, *version = version_row
        if (status not in FINAL_STATUSES or tuple(version) != entry.version or entry.tenant != tenant
                or entry.script_root != request.script_root):
            self.forget(job_id)
            return None
        with self._lock:
            if job_id in self._entries:
                self._entries.move_to_end(job_id)
        self.hits += 1
        resp = current_app.response_class(entry.body, mimetype="application/json")
        resp.set_etag(entry.etag)
        return resp

    def keep(self, job_id: str, tenant: str, status: str, version: tuple[Any, ...], resp: Response) -> None:
        if status not in FINAL_STATUSES:
            return
        entry = Stored(tenant, request.script_root, tuple(version), resp.get_data(), resp.get_etag()[0])
        with self._lock:
            self._entries[job_id] = entry
            self._entries.move_to_end(job_id)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def forget(self, job_id: str) -> None:
        with self._lock:
            self._entries.pop(job_id, None)


def status_cache() -> StatusCache | None:
    """This app's cache; None on SQLite (no `xmin` to check a stored response against)."""
    extensions = current_app.extensions
    if "trainyard_status_cache" not in extensions:
        postgres = services().db.engine.dialect.name == "postgresql"
        extensions["trainyard_status_cache"] = StatusCache() if postgres else None
    return extensions["trainyard_status_cache"]
