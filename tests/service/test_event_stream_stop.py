"""An API process told to stop (SIGTERM: a restart, a deploy, `docker compose stop`) ends its open event
streams at once and cleanly: each gets what there was, then an `error` event (a 503 problem, `retry: 1000`,
no id) and the end of its body, and the process stops without waiting out gunicorn's graceful timeout for
them (service/gunicorn_conf.py `drain_streams_on_stop`, service/eventhub.py `EventHub.drain`).

Before, an open stream was a request in flight until its job ended: the stop waited the whole graceful
timeout (10 s), then gunicorn killed the worker and the client read a broken chunked body.
"""
from __future__ import annotations

import signal
from pathlib import Path

import pytest
import requests

from client.api import parse_sse
from service.auth import authenticate, create_token
from trainyard.db import Database
from trainyard.db.models import Job
from trainyard.spec import validate_spec
from tests.conftest import start_api, tiny_spec
from tests.service.test_event_stream_db_loss import lonely_db  # noqa: F401 (a fixture: a database no worker reads)


@pytest.mark.parametrize("worker_class", ["gevent", "gthread"])
def test_a_stopping_api_ends_its_open_streams_with_a_retry_and_stops(
        worker_class: str, lonely_db: tuple[str, str], service_env: dict[str, str], tmp_path: Path) -> None:
    # The API on a database of this module's: no worker's reaper sends its queued job, which stays queued.
    _name, db_url = lonely_db
    db = Database(db_url)
    with db.session() as s:
        token = create_token(s, f"stop-{worker_class}").token
    with db.session() as s:
        tenant = authenticate(s, token).tenant_id  # type: ignore[union-attr]
        job = Job(tenant_id=tenant, name="streamed while the API stops", status="queued",
                  spec=validate_spec(tiny_spec()), epochs=3)
        s.add(job)
    job_id, auth = job.id, {"Authorization": f"Bearer {token}"}
    db.dispose()
    proc, url = start_api({**service_env, "TRAINYARD_DATABASE_URL": db_url, "TRAINYARD_API_WORKER_CLASS": worker_class},
                          tmp_path / "api.log")
    try:
        with requests.get(f"{url}/v1/jobs/{job_id}/events", headers=auth, stream=True, timeout=30) as resp:
            assert resp.status_code == 200
            events = parse_sse(resp.iter_lines(decode_unicode=True))
            first = next(events)
            assert (first.event, first.data["status"]) == ("status", "queued")
            proc.popen.send_signal(signal.SIGTERM)
            rest = list(events)  # to the end of the body: a cut stream raises ChunkedEncodingError here
        assert [e.event for e in rest] == ["error"], rest
        error = rest[0]
        assert error.retry == 1000
        assert error.data["status"] == 503 and "stopping" in error.data["detail"]
        assert proc.popen.wait(30) == 0
        # gunicorn kills a worker still busy when its graceful timeout runs out, and says so.
        assert "SIGKILL" not in proc.output(), proc.output()[-3000:]
    finally:
        proc.stop()
