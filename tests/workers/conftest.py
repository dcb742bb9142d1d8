from __future__ import annotations

from typing import Any

import pytest

from trainyard.db.models import Job
from tests.conftest import tiny_spec


@pytest.fixture()
def job_id(app: Any, client: Any, auth: dict[str, str]) -> str:
    """A queued job no worker was ever sent: only this test moves it."""
    template = client.post("/v1/jobs", json=tiny_spec(), headers=auth).get_json()
    with app.extensions["trainyard"].db.session() as s:
        row = s.get(Job, template["id"])
        job = Job(tenant_id=row.tenant_id, name="fencing", status="queued", spec=row.spec, epochs=row.epochs,
                  resource_class=row.resource_class)
        s.add(job)
        s.flush()
        return job.id
