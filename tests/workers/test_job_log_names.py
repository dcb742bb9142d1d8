"""Every line of a job's logs names the worker process that wrote it, as the job row does."""
from __future__ import annotations

from typing import Any

import requests

from tests.conftest import Proc, tiny_spec, wait_until


def test_job_log_lines_name_the_worker_process_that_wrote_them(api_url: str, auth: dict[str, str],
                                                               worker: Proc, app: Any) -> None:
    from trainyard.db.models import Job

    resp = requests.post(f"{api_url}/v1/jobs", json=tiny_spec(name="log-names"), headers=auth, timeout=10)
    assert resp.status_code == 201, resp.text
    job_id = resp.json()["id"]
    url = f"{api_url}/v1/jobs/{job_id}/logs"

    def finished() -> list[dict[str, Any]] | None:
        lines = requests.get(url, headers=auth, timeout=10).json()["logs"]
        return lines if any(line["message"].startswith("finished:") for line in lines) else None

    lines = wait_until(finished, 120, 0.2, "the job's last log line")
    with app.extensions["trainyard"].db.session() as s:
        claimed_by = s.get(Job, job_id).worker_id
    # `<celery node name>:<pid>`; bin/worker execs celery, so the pid is the process the fixture started.
    assert claimed_by == f"{claimed_by.rsplit(':', 1)[0]}:{worker.popen.pid}"
    assert claimed_by.startswith("worker@")
    assert {line["worker_id"] for line in lines} == {claimed_by}
