"""Queue positions: FIFO per resource class in the broker's order (when the message was last sent, else
when the job was created, ties by id); jobs not queued have none."""
from __future__ import annotations

import random
import secrets
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select

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

