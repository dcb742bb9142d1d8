"""Queue positions: FIFO per resource class in the broker's order (when the message was last sent, else
when the job was created, ties by id); jobs not queued have none."""
from __future__ import annotations

import random
import re
import secrets
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import delete, event, select, update

from service.api.representations import queue_positions
from trainyard.db.models import Job, utcnow
from tests.conftest import tiny_spec


def test_positions_follow_the_broker_order_per_class(app: Any, client: Any, auth: dict[str, str]) -> None:
    svc = app.extensions["trainyard"]
    template = client.post("/v1/jobs", json=tiny_spec(), headers=auth).get_json()
    rng = random.Random(7)
    classes = [f"pos-{secrets.token_hex(3)}", f"pos-{secrets.token_hex(3)}"]
    now = utcnow()  # recent times only: the reaper leaves messages younger than its grace alone
    with svc.db.session() as s:
        tenant, spec = s.execute(select(Job.tenant_id, Job.spec).where(Job.id == template["id"])).one()
        jobs = []
        for i in range(40):
            created = now - timedelta(milliseconds=rng.randrange(0, 900))
            enqueued = None if i % 5 == 0 else created + timedelta(milliseconds=rng.choice([0, 0, 50, 300]))
            jobs.append(Job(tenant_id=tenant, name=f"q{i}", spec=spec, epochs=1, resource_class=classes[i % 2],
                            status="running" if i % 7 == 3 else "queued", created_at=created,
                            enqueued_at=enqueued))
        s.add_all(jobs)
        s.flush()
        rows = [(j.id, j.resource_class, j.status, j.enqueued_at or j.created_at) for j in jobs]
    try:
        expected = {}
        for cls in classes:
            queued = sorted((r for r in rows if r[1] == cls and r[2] == "queued"), key=lambda r: (r[3], r[0]))
            expected.update({r[0]: n for n, r in enumerate(queued, 1)})
        with svc.db.read_session() as s:
            assert queue_positions(s, jobs) == expected  # running jobs have none
            some = jobs[::3]
            assert queue_positions(s, some) == {k: v for k, v in expected.items() if k in {j.id for j in some}}
            assert queue_positions(s, []) == {}
            for job in jobs:  # one job alone is counted on the index, not ranked: the same positions
                assert queue_positions(s, [job]) == ({job.id: expected[job.id]} if job.id in expected else {})
    finally:
        with svc.db.session() as s:
            s.execute(delete(Job).where(Job.resource_class.in_(classes)))



def _queue_of(svc: Any, client: Any, auth: dict[str, str], n: int) -> tuple[str, list[Job]]:
    """`n` queued jobs of a class of their own (no worker serves it), sent 1 s apart, oldest first; marked
    sent, so the outbox sweep leaves them alone."""
    template = client.post("/v1/jobs", json=tiny_spec(), headers=auth).get_json()
    cls, now = f"pos-{secrets.token_hex(3)}", utcnow()
    with svc.db.session() as s:
        tenant, spec = s.execute(select(Job.tenant_id, Job.spec).where(Job.id == template["id"])).one()
        jobs = [Job(tenant_id=tenant, name=f"q{i}", spec=spec, epochs=1, resource_class=cls, status="queued",
                    created_at=now - timedelta(seconds=n - i), enqueued_at=now - timedelta(seconds=n - i))
                for i in range(n)]
        s.add_all(jobs)
        s.flush()
        s.expunge_all()
    return cls, jobs


def test_a_page_near_the_head_of_the_queue_ranks_only_the_jobs_ahead_of_it(app: Any, client: Any,
                                                                           auth: dict[str, str]) -> None:
    # A deep page of the list holds jobs that wait near the head of their queue: their places are ranked
    # from the head up to the page's last-sent job, not over the whole queue behind them.
    svc = app.extensions["trainyard"]  # the suite's Postgres (EXPLAIN ANALYZE is its)
    cls, jobs = _queue_of(svc, client, auth, 300)
    try:
        page = jobs[5:15]
        with svc.db.read_connection() as conn:
            ran: list[tuple[str, Any]] = []
            event.listen(conn, "before_cursor_execute", lambda *args: ran.append((args[2], args[3])))
            assert queue_positions(conn, page) == {job.id: n for n, job in enumerate(jobs, 1) if job in page}
            assert len(ran) == 1, ran  # one statement: every job of the page was ranked in it
            plan = "\n".join(row[0] for row in conn.exec_driver_sql("EXPLAIN (ANALYZE, COSTS OFF) " + ran[0][0],
                                                                     ran[0][1]))
        print(plan)
        # The ranking's input: the head of the queue up to the page, not the 300 jobs (on a queue this long
        # Postgres reads it from ix_jobs_queue, in order; on this small table it may scan and sort).
        ranked = [line for line in plan.splitlines() if "WindowAgg" in line]
        assert ranked and int(re.search(r"rows=(\d+)", ranked[0]).group(1)) == 15, plan
    finally:
        with svc.db.session() as s:
            s.execute(delete(Job).where(Job.resource_class == cls))


@pytest.fixture()
def service(either_app: Any) -> tuple[Any, Any, dict[str, str]]:
    """(the app's services, a test client, a new tenant's headers) on Postgres and on the embedded SQLite."""
    from service.auth import create_token

    with either_app.extensions["trainyard"].db.session() as s:
        issued = create_token(s, f"positions-{secrets.token_hex(4)}")
    return either_app.extensions["trainyard"], either_app.test_client(), {"Authorization": f"Bearer {issued.token}"}


def test_a_job_sent_again_after_the_page_read_it_keeps_its_place(service: tuple[Any, Any, dict[str, str]]) -> None:
    # The page's rows say when each job was sent; a job re-queued since (its message sent again, now) lies
    # beyond the last of those: it is ranked again over its whole queue, at the tail where it now waits.
    svc, client, auth = service
    cls, jobs = _queue_of(svc, client, auth, 30)
    try:
        page = jobs[:10]  # as read, before the re-queue
        with svc.db.session() as s:
            s.execute(update(Job).where(Job.id == page[3].id).values(enqueued_at=utcnow()))
        expected = {job.id: n for n, job in enumerate(jobs[:3] + jobs[4:10], 1)}
        expected[page[3].id] = len(jobs)
        with svc.db.read_session() as s:
            assert queue_positions(s, page) == expected
    finally:
        with svc.db.session() as s:
            s.execute(delete(Job).where(Job.resource_class == cls))
