"""Status polls of ended jobs answered from the API process's stored response (service/api/status_cache.py):
only while the job's version in the database is the one stored with it. Each change below is written
straight to the database, as another API process or a worker writes it, so the poll can only see it by
checking the version; the API's own answer is compared with a fresh build of the same resource."""
from __future__ import annotations

import random
import threading
import time
from typing import Any

import pytest
from sqlalchemy import update

from service.api.status_cache import status_cache
from tests.conftest import tiny_spec
from trainyard.db.models import Finding, Job
from trainyard.spec import validate_spec
from trainyard.submission import new_job


@pytest.fixture(scope="module")
def tenant(app: Any) -> tuple[dict[str, str], dict[str, str], str]:
    from service.auth import create_token

    with app.extensions["trainyard"].db.session() as s:
        mine = create_token(s, f"status-cache-{random.getrandbits(32)}")
        theirs = create_token(s, f"status-cache-other-{random.getrandbits(32)}")
    return ({"Authorization": f"Bearer {mine.token}"}, {"Authorization": f"Bearer {theirs.token}"}, mine.tenant_id)


def add_job(app: Any, tenant_id: str, status: str = "succeeded", **fields: Any) -> str:
    with app.extensions["trainyard"].db.session() as s:
        job = new_job(tenant_id, validate_spec(tiny_spec()), **fields)
        job.status, job.epoch, job.best_monitor, job.best_value, job.best_epoch = status, 2, "val_loss", 0.5, 2
        s.add(job)
        s.flush()
        return job.id


def write(app: Any, stmt: Any) -> None:
    with app.extensions["trainyard"].db.session() as s:
        s.execute(stmt)


def hits(app: Any) -> int:
    with app.app_context():
        return status_cache().hits


def poll(client: Any, auth: dict[str, str], job_id: str, app: Any) -> tuple[Any, bool]:
    """The poll's response, and whether it came from the stored response."""
    before = hits(app)
    resp = client.get(f"/v1/jobs/{job_id}", headers=auth)
    return resp, hits(app) == before + 1


def test_an_ended_job_is_answered_from_the_stored_response_byte_for_byte(client: Any, app: Any, tenant: Any) -> None:
    auth, _, tenant_id = tenant
    job_id = add_job(app, tenant_id)
    first, stored = poll(client, auth, job_id, app)
    assert first.status_code == 200 and not stored
    again, stored = poll(client, auth, job_id, app)
    assert stored and again.get_data() == first.get_data() and again.headers["ETag"] == first.headers["ETag"]
    # A conditional poll of the stored response is a bodiless 304, as for a built one.
    cond, stored = poll(client, {**auth, "If-None-Match": first.headers["ETag"]}, job_id, app)
    assert stored and cond.status_code == 304 and cond.get_data() == b""


def change_elsewhere(app: Any, client: Any, auth: dict[str, str], tenant_id: str, job_id: str,
                     change: str) -> str | None:
    """Change the ended job as another process would (straight in the database) or delete it through the
    API; returns the fork's id for "forked"."""
    if change == "renamed":
        write(app, update(Job).where(Job.id == job_id).values(name="renamed-elsewhere"))
    elif change == "forked":
        return add_job(app, tenant_id, status="queued", parent_id=job_id)
    elif change == "finding":
        write(app, Finding.__table__.insert().values(job_id=job_id, code="dead_relu", severity="warning",
                                                     message="m", evidence={}, layer="dense_1"))
    elif change == "status":  # an ended job that is queued again (an operator's re-run) is never answered as kept
        write(app, update(Job).where(Job.id == job_id).values(status="queued", finished_at=None))
    else:
        assert client.delete(f"/v1/jobs/{job_id}", headers=auth).status_code == 204
    return None


@pytest.mark.parametrize("change", ["renamed", "forked", "finding", "status"])
def test_any_change_written_elsewhere_is_seen_by_the_next_poll(client: Any, app: Any, tenant: Any, change: str) -> None:
    auth, _, tenant_id = tenant
    job_id = add_job(app, tenant_id)
    before, _ = poll(client, auth, job_id, app)
    assert poll(client, auth, job_id, app)[1]  # stored
    child = change_elsewhere(app, client, auth, tenant_id, job_id, change)
    after, stored = poll(client, auth, job_id, app)
    assert after.status_code == 200 and not stored
    assert after.headers["ETag"] != before.headers["ETag"]
    body = after.get_json()
    expected = {"renamed": lambda: body["name"] == "renamed-elsewhere",
                "forked": lambda: body["children"] == [child],
                "finding": lambda: body["findings"]["by_severity"]["warning"] == 1,
                "status": lambda: body["status"] == "queued"}[change]
    assert expected(), body
    if change != "status":
        again, stored = poll(client, auth, job_id, app)  # stored again, as it is now
        assert stored and again.get_data() == after.get_data()
    else:
        assert not poll(client, auth, job_id, app)[1]  # queued: built every time


def test_another_tenant_and_a_deleted_job_are_404_though_stored(client: Any, app: Any, tenant: Any) -> None:
    auth, other_auth, tenant_id = tenant
    job_id = add_job(app, tenant_id)
    poll(client, auth, job_id, app)
    assert poll(client, auth, job_id, app)[1]
    assert client.get(f"/v1/jobs/{job_id}", headers=other_auth).status_code == 404
    assert client.delete(f"/v1/jobs/{job_id}", headers=auth).status_code == 204
    assert client.get(f"/v1/jobs/{job_id}", headers=auth).status_code == 404


def test_a_patch_through_the_api_is_seen_at_once(client: Any, app: Any, tenant: Any) -> None:
    auth, _, tenant_id = tenant
    job_id = add_job(app, tenant_id)
    poll(client, auth, job_id, app)
    patched = client.patch(f"/v1/jobs/{job_id}", json={"labels": {"team": "vision"}}, headers=auth)
    assert patched.status_code == 200
    after, stored = poll(client, auth, job_id, app)
    assert not stored and after.get_json()["labels"] == {"team": "vision"}
    assert after.headers["ETag"] == patched.headers["ETag"]


# Concurrent polls of one API process share the version query (status_cache.VersionReads). These drive it
# from threads (bin/api's gevent workers run the same code on greenlets) against the real database, holding
# a query at the point each test needs.

class HeldReads:
    """JOB_VERSIONS read from the database for real, each read recorded; `hold` makes the next read wait,
    after its rows came back, until `release`."""

    def __init__(self, app: Any) -> None:
        from service.api.status_cache import JOB_VERSIONS

        self.db = app.extensions["trainyard"].db
        self.stmt = JOB_VERSIONS
        self.sent: list[list[str]] = []
        self.fail: dict[int, BaseException] = {}  # the nth read (0-based) raises this instead
        self.read_back = threading.Event()
        self.released = threading.Event()
        self.holding = False

    def __call__(self, ids: list[str], tenants: list[str]) -> list[Any]:
        n = len(self.sent)
        self.sent.append(ids)
        if n in self.fail:
            raise self.fail[n]
        rows = self.db.all_rows(self.stmt, {"ids": ids, "tenants": tenants})
        if self.holding:
            self.holding = False
            self.read_back.set()
            assert self.released.wait(30)
        return rows


def in_thread(fn: Any, *args: Any) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            out["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def queued(reads: Any, n: int) -> None:
    deadline = time.monotonic() + 30
    while len(reads._queued) < n:
        assert time.monotonic() < deadline, "polls did not queue"
        time.sleep(0.005)


def behind_a_held_query(app: Any, tenant_id: str, first_job: str, later_jobs: tuple[str, ...], *,
                        fail: dict[int, BaseException] | None = None, meanwhile: Any = None) -> tuple[Any, ...]:
    """VersionReads over HeldReads: the poll of `first_job` sends a query that is held once its rows are
    read; `meanwhile()` runs, the polls of `later_jobs` queue behind it, and then it is released. The nth
    read raises `fail[n]`. Returns (reads, held, the first poll's outcome, the later polls' outcomes)."""
    from service.api.status_cache import VersionReads

    held = HeldReads(app)
    held.fail.update(fail or {})
    reads = VersionReads(held)
    held.holding = True
    first, first_out = in_thread(reads.version, first_job, tenant_id)
    assert held.read_back.wait(30)  # the first query has read its rows and not returned yet
    if meanwhile is not None:
        meanwhile()
    later = [in_thread(reads.version, job_id, tenant_id) for job_id in later_jobs]
    queued(reads, len(later_jobs))
    held.released.set()
    for thread, _ in [(first, first_out), *later]:
        thread.join(30)
        assert not thread.is_alive()
    return reads, held, first_out, [out for _, out in later]


def test_polls_that_arrive_during_a_version_query_share_the_next_one_which_sees_later_changes(
        app: Any, tenant: Any) -> None:
    _, _, tenant_id = tenant
    a, b, c = (add_job(app, tenant_id) for _ in range(3))
    reads, held, first, later = behind_a_held_query(
        app, tenant_id, a, (b, a, c, a),
        meanwhile=lambda: write(app, update(Job).where(Job.id == a).values(name="renamed-meanwhile")))
    # One query for the first poll, one for the four that came while it was out: not five.
    assert held.sent == [[a], sorted({a, b, c})] and reads.queries == 2
    got = [out["value"] for out in later]
    assert [row.id for row in got] == [b, a, c, a] and all(row.tenant_id == tenant_id for row in got)
    # The first poll's query read a before the rename; the polls that came after the rename were answered
    # by a query sent after they came, which sees it (sharing the query in flight would not).
    assert first["value"].row_version != got[1].row_version == got[3].row_version
    assert reads.version(c, tenant_id).row_version == got[2].row_version and reads.queries == 3
    assert reads.version("job_" + "0" * 32, tenant_id) is None
    assert reads.version(c, "tn_" + "0" * 32) is None  # another tenant's job is not read


def test_a_failed_version_query_fails_each_poll_that_waited_for_it_and_the_next_one_is_sent(
        app: Any, tenant: Any) -> None:
    from sqlalchemy.exc import OperationalError

    _, _, tenant_id = tenant
    a, b = add_job(app, tenant_id), add_job(app, tenant_id)
    reads, held, first, later = behind_a_held_query(
        app, tenant_id, a, (a, b), fail={1: OperationalError("SELECT", {}, Exception("connection lost"))})
    assert first["value"].id == a
    assert all(isinstance(out.get("error"), OperationalError) for out in later)
    assert reads.version(b, tenant_id).id == b and held.sent == [[a], sorted({a, b}), [b]]


class Killed(BaseException):
    """What a greenlet killed mid-request raises (GreenletExit, gevent.Timeout): not the database's error."""


def test_a_poll_killed_while_it_sends_the_query_leaves_the_others_to_the_next_query(app: Any, tenant: Any) -> None:
    _, _, tenant_id = tenant
    a, b, c = (add_job(app, tenant_id) for _ in range(3))
    reads, held, _, later = behind_a_held_query(app, tenant_id, a, (b, c, a), fail={1: Killed()})
    # The poll that sent the second query (b, the first to queue) is the one killed; c and a went on.
    assert isinstance(later[0].get("error"), Killed)
    assert later[1]["value"].id == c and later[2]["value"].id == a
    assert held.sent == [[a], sorted({a, b, c}), sorted({a, c})]
    assert not reads._in_flight and not reads._queued


def test_concurrent_polls_through_the_real_api_see_a_change_written_elsewhere(
        api_url: str, app: Any, tenant: Any) -> None:
    # bin/api (gunicorn, gevent workers): many connections polling stored ended jobs at once share version
    # queries on greenlets; every poll after a change written straight to the database sees it.
    import requests
    from concurrent.futures import ThreadPoolExecutor

    auth, _, tenant_id = tenant
    jobs = [add_job(app, tenant_id) for _ in range(4)]
    sessions = [requests.Session() for _ in range(16)]

    def poll_all(n: int) -> list[tuple[str, str]]:
        def one(i: int) -> tuple[str, str]:
            job_id = jobs[i % len(jobs)]
            resp = sessions[i % len(sessions)].get(f"{api_url}/v1/jobs/{job_id}", headers=auth, timeout=30)
            assert resp.status_code == 200, resp.text
            return job_id, resp.json()["name"]

        with ThreadPoolExecutor(16) as pool:
            return list(pool.map(one, range(n)))

    assert {name for _, name in poll_all(200)} == {"tiny"}
    write(app, update(Job).where(Job.id == jobs[0]).values(name="renamed-elsewhere"))
    after = poll_all(200)
    assert {name for job_id, name in after if job_id == jobs[0]} == {"renamed-elsewhere"}
    assert {name for job_id, name in after if job_id != jobs[0]} == {"tiny"}
    for session in sessions:
        session.close()


# List pages: ended jobs' items kept per API process (status_cache.ListItems), on the same versions.

def list_page(client: Any, auth: dict[str, str], app: Any, query: str) -> tuple[Any, int]:
    """The page's response, and how many of its jobs came from kept items."""
    from service.api.status_cache import list_items

    with app.app_context():
        before = list_items().hits
    resp = client.get(f"/v1/jobs?{query}", headers=auth)
    assert resp.status_code == 200, resp.get_json()
    with app.app_context():
        return resp, list_items().hits - before


def fresh_list_page(app: Any, auth: dict[str, str], query: str) -> bytes:
    """The same page built by an API process that has kept nothing."""
    from service.api.status_cache import list_items

    with app.app_context():
        kept = list_items()
        saved = kept._entries.copy()
        kept._entries.clear()
    try:
        resp = app.test_client().get(f"/v1/jobs?{query}", headers=auth)
    finally:
        with app.app_context():
            kept._entries.clear()
            kept._entries.update(saved)
    return resp.get_data()


def test_a_list_page_answers_ended_jobs_from_kept_items_byte_for_byte(client: Any, app: Any) -> None:
    from service.auth import create_token

    with app.extensions["trainyard"].db.session() as s:
        token = create_token(s, f"list-items-{random.getrandbits(32)}")
    auth = {"Authorization": f"Bearer {token.token}"}
    ended = [add_job(app, token.tenant_id) for _ in range(5)]
    queued = add_job(app, token.tenant_id, status="queued")
    running = add_job(app, token.tenant_id, status="running")
    first, kept = list_page(client, auth, app, "limit=50")
    assert kept == 0 and len(first.get_json()["jobs"]) == 7
    again, kept = list_page(client, auth, app, "limit=50")
    assert kept == len(ended)  # the queued and running jobs are built every time (position, ETA)
    assert again.get_data() == first.get_data() == fresh_list_page(app, auth, "limit=50")
    # Pages by cursor and other sorts hold the same items.
    page1, _ = list_page(client, auth, app, "limit=3&sort=-best_value")
    cursor = page1.get_json()["next_cursor"]
    page2, kept = list_page(client, auth, app, f"limit=3&sort=-best_value&cursor={cursor}")
    assert kept > 0 and page2.get_data() == fresh_list_page(app, auth, f"limit=3&sort=-best_value&cursor={cursor}")
    ids = [job["id"] for job in page1.get_json()["jobs"] + page2.get_json()["jobs"]]
    assert len(set(ids)) == 6  # two pages of three, none twice


@pytest.mark.parametrize("change", ["renamed", "forked", "finding", "status", "deleted"])
def test_any_change_written_elsewhere_is_in_the_next_list_page(client: Any, app: Any, tenant: Any,
                                                               change: str) -> None:
    auth, _, tenant_id = tenant
    job_id = add_job(app, tenant_id)
    query = "limit=5"
    list_page(client, auth, app, query)
    before, kept = list_page(client, auth, app, query)
    assert kept >= 1
    child = change_elsewhere(app, client, auth, tenant_id, job_id, change)
    after, _ = list_page(client, auth, app, query)
    assert after.get_data() == fresh_list_page(app, auth, query)
    jobs = {job["id"]: job for job in after.get_json()["jobs"]}
    expected = {"renamed": lambda: jobs[job_id]["name"] == "renamed-elsewhere",
                "forked": lambda: jobs[job_id]["children"] == [child],
                "finding": lambda: jobs[job_id]["findings"]["by_severity"]["warning"] == 1,
                "status": lambda: jobs[job_id]["status"] == "queued" and jobs[job_id]["queue"] is not None,
                "deleted": lambda: job_id not in jobs}[change]
    assert expected(), jobs.get(job_id)


def test_a_poll_killed_just_as_it_is_woken_to_send_the_next_query_passes_that_on(
        app: Any, tenant: Any, monkeypatch: Any) -> None:
    from service.api import status_cache

    _, _, tenant_id = tenant
    a, b, c = (add_job(app, tenant_id) for _ in range(3))

    class DiesWhenWoken(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            super().wait(timeout)
            raise Killed()

    make_poll = status_cache._Poll

    def poll_of(job: tuple[str, str]) -> Any:
        poll = make_poll(job)
        if job[0] == b:
            poll.woken = DiesWhenWoken()
        return poll

    monkeypatch.setattr(status_cache, "_Poll", poll_of)
    reads, held, _, later = behind_a_held_query(app, tenant_id, a, (b, c))
    # b was to send the second query and died first: c sent it, for itself alone.
    assert isinstance(later[0].get("error"), Killed) and later[1]["value"].id == c
    assert held.sent == [[a], [c]] and not reads._in_flight and not reads._queued
