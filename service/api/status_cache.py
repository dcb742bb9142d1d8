"""Status polls of ended jobs: the response kept per API process, checked against the database on every poll.

A job that has ended (succeeded, failed, cancelled) still changes now and then - PATCH renames or relabels
it, a fork adds a child, a later fork's end settles one of its findings - so nothing here is served on
trust. Each poll of a job seen ended before reads its *version* in one narrow query, through the same
tenant filter as the full read (what is kept is kept per tenant; another tenant's or a deleted job goes on
to the full read, which answers 404): the row's `xmin` (the
transaction that wrote this version of the row; any UPDATE writes a new one), its finding counts per
severity and a signature of its forks' ids. When that equals the version stored with the response, the
stored bytes and ETag are answered without reading the row's 53 columns, decoding its JSON documents and
encoding the body again (on Postgres about a third of a poll's CPU; see bench/README.md).

Concurrent polls of one API process share that query (`VersionReads`): a poll that arrives while one is
in flight waits for it to return and joins the next one, which then reads the versions of every poll that
has arrived meanwhile. Each poll's version is still read by a query sent after the poll arrived (never
an older answer), and under load one round trip serves many polls: the round trip and Postgres' side of
it were about half of a poll's CPU (bench/README.md).

The version is read in the same statement as the row when the response is built, so a stored response is
never older than its version; the fork ids, read in a second query, can only be newer, which costs one
rebuild, never a stale answer. Jobs that are queued or running are never stored (their queue position and
ETA change with time and with other jobs). SQLite (the embedded mode) has no `xmin`: nothing is stored.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, NamedTuple

from flask import Response, current_app, request
from sqlalchemy import String, and_, bindparam, func, select
from sqlalchemy.dialects.postgresql import ARRAY

from service.api.representations import VERSION_COLUMNS, paged_version, per_severity_counts
from service.services import services
from trainyard.db.models import FINAL_STATUSES, Job

# Entries per API process; a status body or a list item is 2-4 kB, so each bounds its cache at a few MB.
MAX_ENTRIES = 2048
MAX_LIST_ITEMS = 4096

# The polls of jobs stored ended: their status and version only. Takes `ids` and `tenants`, two lists of
# the same length: job i is read only if it is tenant i's.
_POLLED = select(func.unnest(bindparam("ids", type_=ARRAY(String))).label("id"),
                 func.unnest(bindparam("tenants", type_=ARRAY(String))).label("tenant_id")).subquery("polled")
JOB_VERSIONS = select(Job.id, Job.tenant_id, Job.status, *per_severity_counts(), *VERSION_COLUMNS).join(
    _POLLED, and_(Job.id == _POLLED.c.id, Job.tenant_id == _POLLED.c.tenant_id))


class _Poll:
    """One poll waiting for its job's version: `row` once read (None: no such job), or `error`."""

    __slots__ = ("job", "woken", "done", "row", "error")

    def __init__(self, job: tuple[str, str]) -> None:
        self.job = job  # (job id, tenant id)
        self.woken = threading.Event()  # gevent's own Event in a monkey-patched worker
        self.done = False
        self.row: Any = None
        self.error: BaseException | None = None


class VersionReads:
    """The versions of jobs for concurrent polls, one query at a time for all polls waiting (see above).

    The poll that finds no query in flight sends one for itself and every poll queued by then; polls that
    arrive meanwhile queue up, and the first of them sends the next query when the one in flight returns.
    No poll sends more than one query, and none waits for more than the one in flight and its own."""

    def __init__(self, read: Callable[[list[str], list[str]], list[Any]]) -> None:
        self._read = read  # (job ids, their tenants) -> JOB_VERSIONS rows
        self._lock = threading.Lock()
        self._queued: list[_Poll] = []
        self._in_flight = False
        self.queries = 0  # round trips made (read by tests and the benchmark's notes)

    def version(self, job_id: str, tenant: str) -> Any:
        """The JOB_VERSIONS row of `tenant`'s job `job_id` (None: no such job of that tenant), read by a query
        sent after this call."""
        poll = _Poll((job_id, tenant))
        with self._lock:
            self._queued.append(poll)
            sends_first, self._in_flight = not self._in_flight, True
        if not sends_first:
            try:
                poll.woken.wait()
            except BaseException:  # its greenlet killed while it waited (a timeout, a worker stopping)
                self._leave(poll)
                raise
        if not poll.done:  # this poll leads the next query
            self._send(poll)
        if poll.error is not None:
            raise poll.error
        return poll.row

    def _leave(self, poll: _Poll) -> None:
        """`poll` gives up waiting: out of the queue, and if it was woken to send the next query, the poll
        after it sends it instead (nobody else would)."""
        with self._lock:
            if poll not in self._queued:
                return  # answered meanwhile
            woken_to_send = self._queued[0] is poll and poll.woken.is_set()
            self._queued.remove(poll)
            if woken_to_send:
                if self._queued:
                    self._queued[0].woken.set()
                else:
                    self._in_flight = False

    def _send(self, leader: _Poll) -> None:
        with self._lock:
            batch, self._queued = self._queued, []
        answered = False
        try:
            self.queries += 1
            try:
                ids, tenants = zip(*sorted({poll.job for poll in batch}))
                rows = {(row.id, row.tenant_id): row for row in self._read(list(ids), list(tenants))}
                for poll in batch:
                    poll.row = rows.get(poll.job)
            except Exception as exc:  # every poll of the query answers its error (the database's: a 503)
                for poll in batch:
                    poll.error = exc
            answered = True
        finally:
            with self._lock:
                if answered:
                    for poll in batch:
                        poll.done = True
                        poll.woken.set()
                else:  # the leader's greenlet was killed mid-query: the others go in the next query
                    self._queued[:0] = [poll for poll in batch if poll is not leader]
                if self._queued:  # the first poll that came meanwhile sends the next query
                    self._queued[0].woken.set()
                else:
                    self._in_flight = False


class Stored(NamedTuple):
    version: tuple[Any, ...]
    body: bytes | str  # a status response's body; a list item's JSON text
    etag: str


class _Kept:
    """What an API process keeps of ended jobs, by tenant, application root (the links in a body) and job
    id: at most `max_entries`, the least recently used going first."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple[str, str, str], Stored] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0  # answered from what was kept (read by tests and the benchmark's notes)

    @staticmethod
    def _key(tenant: str, job_id: str) -> tuple[str, str, str]:
        return _Kept._keys(tenant, [job_id])[0]

    @staticmethod
    def _keys(tenant: str, job_ids: list[str]) -> list[tuple[str, str, str]]:
        root = request.script_root
        return [(tenant, root, job_id) for job_id in job_ids]

    def _current(self, key: tuple[str, str, str], status: str, version: tuple[Any, ...]) -> Stored | None:
        """The entry of `key` when `status` and `version` (read now) say the job is as it was; else None, and
        the entry goes."""
        return self._current_many([(key, status, version)])[0]

    def _current_many(self, wanted: list[tuple[tuple[str, str, str], str, tuple[Any, ...]]]) -> list[Stored | None]:
        """`_current` of each (key, status, version), taking the lock once for them all (a list page asks for
        up to 200)."""
        found: list[Stored | None] = []
        fresh, stale = [], []
        entries = self._entries
        for key, status, version in wanted:
            entry = entries.get(key)
            if entry is not None and (status not in FINAL_STATUSES or version != entry.version):
                stale.append(key)
                entry = None
            elif entry is not None:
                fresh.append(key)
            found.append(entry)
        if fresh or stale:
            with self._lock:
                for key in stale:
                    entries.pop(key, None)
                for key in fresh:
                    if key in entries:
                        entries.move_to_end(key)
        self.hits += len(fresh)
        return found

    def _keep(self, key: tuple[str, str, str], status: str, entry: Stored) -> None:
        if status not in FINAL_STATUSES:  # queued and running jobs change with time and with other jobs
            return
        with self._lock:
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def _forget(self, key: tuple[str, str, str]) -> None:
        with self._lock:
            self._entries.pop(key, None)


class StatusCache(_Kept):
    def __init__(self, read_versions: Callable[[list[str], list[str]], list[Any]],
                 max_entries: int = MAX_ENTRIES) -> None:
        super().__init__(max_entries)
        self.versions = VersionReads(read_versions)

    def answer(self, job_id: str, tenant: str) -> Response | None:
        """The stored response of `tenant`'s job `job_id` when its version, read now, says the job is as it
        was; else None (the caller reads the job, which also answers 404 for no such job)."""
        key = self._key(tenant, job_id)
        if key not in self._entries:
            return None
        row = self.versions.version(job_id, tenant)
        if row is None:  # deleted
            self._forget(key)
            return None
        _id, _tenant, status, *version = row
        if (entry := self._current(key, status, tuple(version))) is None:
            return None
        resp = current_app.response_class(entry.body, mimetype="application/json")
        resp.set_etag(entry.etag)
        return resp

    def keep(self, job_id: str, tenant: str, status: str, version: tuple[Any, ...], resp: Response) -> None:
        self._keep(self._key(tenant, job_id), status, Stored(tuple(version), resp.get_data(), resp.get_etag()[0]))


class ListItems(_Kept):
    """Ended jobs as a list page holds them (representations.job_list_items): a page reads which jobs it
    holds with their versions (JOB_LIST_VERSIONS), takes the items kept here that are current, and reads in
    full only the others. The version is read in the same statement as the row an item is built from."""

    def current(self, paged: list[Any], tenant: str) -> dict[str, str]:
        """The items of JOB_LIST_VERSIONS rows' jobs (jobs of `tenant`) that are current, by job id."""
        keys = self._keys(tenant, [row.id for row in paged])
        entries = self._current_many([(key, row.status, paged_version(row)) for key, row in zip(keys, paged)])
        return {row.id: str(entry.body) for row, entry in zip(paged, entries) if entry is not None}

    def keep(self, row: Any, tenant: str, version: tuple[Any, ...], item: str) -> None:
        self._keep(self._key(tenant, row.id), row.status, Stored(version, item, ""))


def status_cache() -> StatusCache | None:
    """This app's cache; None on SQLite (no `xmin` to check a stored response against)."""
    extensions = current_app.extensions
    if "trainyard_status_cache" not in extensions:
        db = services().db
        postgres = db.engine.dialect.name == "postgresql"
        extensions["trainyard_status_cache"] = (
            StatusCache(lambda ids, tenants: db.all_rows(JOB_VERSIONS, {"ids": ids, "tenants": tenants}))
            if postgres else None)
    return extensions["trainyard_status_cache"]


def list_items() -> ListItems:
    """This app's kept list items (Postgres: the list pages of SQLite go through the ORM)."""
    extensions = current_app.extensions
    if "trainyard_list_items" not in extensions:
        extensions["trainyard_list_items"] = ListItems(MAX_LIST_ITEMS)
    return extensions["trainyard_list_items"]
