"""Status polls of ended jobs answered from the API process's stored response (service/api/status_cache.py):
only while the job's version in the database is the one stored with it. Each change below is written
straight to the database, as another API process or a worker writes it, so the poll can only see it by
checking the version; the API's own answer is compared with a fresh build of the same resource."""
from __future__ import annotations

import random
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


@pytest.mark.parametrize("change", ["renamed", "forked", "finding", "status"])
def test_any_change_written_elsewhere_is_seen_by_the_next_poll(client: Any, app: Any, tenant: Any, change: str) -> None:
    auth, _, tenant_id = tenant
    job_id = add_job(app, tenant_id)
    before, _ = poll(client, auth, job_id, app)
    assert poll(client, auth, job_id, app)[1]  # stored
    if change == "renamed":
        write(app, update(Job).where(Job.id == job_id).values(name="renamed-elsewhere"))
    elif change == "forked":
        child = add_job(app, tenant_id, status="queued", parent_id=job_id)
    elif change == "finding":
        write(app, Finding.__table__.insert().values(job_id=job_id, code="dead_relu", severity="warning",
                                                     message="m", evidence={}, layer="dense_1"))
    else:  # an ended job that is queued again (an operator's re-run) is never answered from the store
        write(app, update(Job).where(Job.id == job_id).values(status="queued", finished_at=None))
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
