"""A queued job's ETA learns from the tenant's succeeded jobs; a succeeded row without a start or an end time
(written by an import or an operator, not a worker) is skipped, never a 500 for the next submission."""
from __future__ import annotations

from typing import Any

from tests.conftest import tiny_spec
from trainyard.db.models import Job, Tenant, utcnow


def test_succeeded_rows_without_times_do_not_break_the_estimate(app: Any, client: Any, make_token: Any) -> None:
    auth = {"Authorization": f"Bearer {make_token('eta-history')}"}
    first = client.post("/v1/jobs", json=tiny_spec(), headers=auth)
    assert first.status_code == 201
    with app.extensions["trainyard"].db.session() as s:
        row = s.get(Job, first.get_json()["id"])
        tenant = s.get(Tenant, row.tenant_id)
        assert tenant is not None
        s.add(Job(tenant_id=row.tenant_id, name="imported", status="succeeded", spec=row.spec, epochs=3,
                  resource_class=row.resource_class, stop_reason="completed", started_at=utcnow()))
    resp = client.post("/v1/jobs", json=tiny_spec(), headers=auth)
    assert resp.status_code == 201, resp.get_data(as_text=True)
    assert resp.get_json()["eta"] is None  # nothing to learn from yet
    got = client.get(f"/v1/jobs/{resp.get_json()['id']}", headers=auth)
    assert got.status_code == 200 and got.get_json()["eta"] is None
