"""Live events (SSE) against the real gunicorn (bin/api) and a real worker, and ETag/304 on GET job."""
from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from sqlalchemy import update

from trainyard.db import Database
from trainyard.db.models import Job
from tests.conftest import tiny_spec


def read_events(resp: requests.Response, timeout: float = 90) -> Iterator[dict[str, Any]]:
    """Parse an SSE response into {"id", "event", "data"} dicts (and {"comment"} for comment lines)."""
    deadline = time.monotonic() + timeout
    event: dict[str, Any] = {}
    for line in resp.iter_lines(decode_unicode=True):
        if time.monotonic() > deadline:
            raise AssertionError("the stream did not end in time")
        if line == "":
            if event:
                yield event
            event = {}
        elif line.startswith(":"):
            yield {"comment": line[1:].strip()}
        else:
            field, _, value = line.partition(": ")
            event[field] = json.loads(value) if field == "data" else (int(value) if field == "id" else value)


def stream(api_url: str, job_id: str, auth: dict[str, str], **kwargs: Any) -> requests.Response:
    resp = requests.get(f"{api_url}/v1/jobs/{job_id}/events", headers={**auth, **kwargs.pop("headers", {})},
                        stream=True, timeout=60, **kwargs)
    return resp


def submit(api_url: str, auth: dict[str, str], spec: dict[str, Any]) -> dict[str, Any]:
    resp = requests.post(f"{api_url}/v1/jobs", json=spec, headers=auth, timeout=30)
    assert resp.status_code == 201, resp.text
    return resp.json()


def test_a_real_jobs_stream_delivers_status_epochs_findings_and_end_in_order(
        api_url: str, auth: dict[str, str], worker: Any) -> None:
    spec = tiny_spec(dataset={"id": "builtin:iris", "validation_split": 0.2, "normalize": "standardize"},
                     training={"epochs": 4, "batch_size": 16, "seed": 1})
    job = submit(api_url, auth, spec)
    resp = stream(api_url, job["id"], auth)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    assert resp.headers["Cache-Control"] == "no-cache"
    events = [e for e in read_events(resp) if "comment" not in e]

    assert events[0]["event"] == "status" and events[0]["data"]["job"]["id"] == job["id"]
    assert events[-1]["event"] == "end" and events[-1]["data"] == {"status": "succeeded"}
    ids = [e["id"] for e in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids), ids
    statuses = [e["data"]["status"] for e in events if e["event"] == "status"]
    assert statuses[-1] == "succeeded" and "running" in statuses, statuses
    # Every epoch exactly as the metrics endpoint has it, in order, and the final status after them.
    metrics = requests.get(f"{api_url}/v1/jobs/{job['id']}/metrics", headers=auth, timeout=30).json()["epochs"]
    epochs = [e["data"] for e in events if e["event"] == "epoch"]
    assert epochs == metrics and [r["epoch"] for r in epochs] == [1, 2, 3, 4]
    # running before the first epoch, the final status after the last one
    at = {(e["event"], e["data"].get("status") or e["data"].get("epoch")): i for i, e in enumerate(events)}
    assert at[("status", "running")] < at[("epoch", 1)] < at[("epoch", 4)] < at[("status", "succeeded")]
    findings = requests.get(f"{api_url}/v1/jobs/{job['id']}/diagnostics", headers=auth, timeout=30).json()["findings"]
    streamed = {(e["data"]["code"], e["data"]["layer"]): e["data"] for e in events if e["event"] == "finding"}
    assert streamed == {(f["code"], f["layer"]): f for f in findings}

    # A fresh stream of the ended job replays the same epochs with the same ids, then ends.
    again = [e for e in read_events(stream(api_url, job["id"], auth)) if "comment" not in e]
    assert [(e["id"], e["data"]) for e in again if e["event"] == "epoch"] == \
        [(e["id"], e["data"]) for e in events if e["event"] == "epoch"]
    assert again[0]["data"]["status"] == "succeeded" and again[-1]["event"] == "end"

    # Resuming after epoch 2 sends only what came after it, by header or by query parameter.
    second = next(e["id"] for e in events if e["event"] == "epoch" and e["data"]["epoch"] == 2)
    for kwargs in ({"headers": {"Last-Event-ID": str(second)}}, {"params": {"last_event_id": second}}):
        resumed = [e for e in read_events(stream(api_url, job["id"], auth, **kwargs)) if "comment" not in e]
        assert all(e["id"] > second for e in resumed)
        assert [e["data"]["epoch"] for e in resumed if e["event"] == "epoch"] == [3, 4]
        assert resumed[-1]["event"] == "end" and resumed[-2]["data"]["status"] == "succeeded"


def test_events_are_tenant_scoped_and_check_the_resume_id(api_url: str, auth: dict[str, str],
                                                          other_auth: dict[str, str]) -> None:
    job = submit(api_url, auth, tiny_spec())
    requests.post(f"{api_url}/v1/jobs/{job['id']}/cancel", headers=auth, timeout=30)
    other = stream(api_url, job["id"], other_auth)
    assert other.status_code == 404 and other.headers["Content-Type"] == "application/problem+json"
    bad = stream(api_url, job["id"], auth, headers={"Last-Event-ID": "yesterday"})
    assert bad.status_code == 422 and bad.json()["errors"][0]["field"] == "header.Last-Event-ID"


def test_keepalive_comments_while_idle(tuned_api: tuple[str, Any], settings: Any, streams_token: str) -> None:
    # A job that stays running (no worker holds it; its row is set by hand) keeps the stream idle.
    db = Database(settings.database_url)
    job_id = _idle_running_job(settings, streams_token, db)
    try:
        resp = stream(tuned_api[0], job_id, {"Authorization": f"Bearer {streams_token}"})
        items = read_events(resp)
        assert next(items)["event"] == "status"
        assert next(items) == {"comment": "keepalive"}  # after half a second of quiet
        resp.close()
    finally:
        with db.session() as s:
            s.execute(update(Job).where(Job.id == job_id).values(status="cancelled", stop_reason="cancelled"))
        db.dispose()


def _idle_running_job(settings: Any, token: str, db: Database) -> str:
    """A running job no worker will touch: its row exists, no message is queued, its lease never expires."""
    from service.auth import authenticate
    from trainyard.spec import validate_spec

    with db.session() as s:
        tenant = authenticate(s, token).tenant_id
        job = Job(tenant_id=tenant, name="idle", status="running", spec=validate_spec(tiny_spec()), epochs=3)
        s.add(job)
    return job.id


@pytest.fixture(scope="module")
def streams_token(make_token: Any) -> str:
    """A tenant of its own: the hand-made idle jobs stay out of other tests' job lists."""
    return make_token("streams")


def _open_stream(host: str, port: int, path: str, token: str) -> socket.socket:
    sock = socket.create_connection((host, port), timeout=30)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
                 "Accept: text/event-stream\r\n\r\n".encode())
    return sock


def _read_until(sock: socket.socket, marker: bytes, timeout: float) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while marker not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {marker!r} within {timeout} s; got {data[-300:]!r}")
        ready, _, _ = select.select([sock], [], [], left)
        if ready:
            chunk = sock.recv(65536)
            if not chunk:
                raise AssertionError(f"stream closed before {marker!r}; got {data[-300:]!r}")
            data += chunk
    return data


@pytest.mark.integration
def test_hundreds_of_idle_streams_do_not_starve_the_api(api_url: str, settings: Any, streams_token: str) -> None:
    token, auth = streams_token, {"Authorization": f"Bearer {streams_token}"}
    db = Database(settings.database_url)
    job_id = _idle_running_job(settings, token, db)
    parts = urlsplit(api_url)
    socks: list[socket.socket] = []
    try:
        for _ in range(200):
            socks.append(_open_stream(parts.hostname or "", parts.port or 80, f"/v1/jobs/{job_id}/events", token))
        for sock in socks:  # every stream is open and has its first event
            assert b"200 OK" in _read_until(sock, b"event: status", 60)

        # With 200 streams parked, the API still answers at once.
        started = time.monotonic()
        resp = requests.get(f"{api_url}/v1/jobs/{job_id}", headers=auth, timeout=10)
        took = time.monotonic() - started
        assert resp.status_code == 200 and resp.json()["status"] == "running"
        assert took < 3, f"GET /v1/jobs/{{id}} took {took:.2f} s with 200 open streams"

        # One status change reaches every stream (a NOTIFY at commit wakes them), and each ends.
        with db.session() as s:
            s.execute(update(Job).where(Job.id == job_id).values(status="cancelled", stop_reason="cancelled"))
        started = time.monotonic()
        for sock in socks:
            tail = _read_until(sock, b"event: end", 30)
            assert b'"status":"cancelled"' in tail
        print(f"200 streams ended {time.monotonic() - started:.2f} s after the change")
    finally:
        for sock in socks:
            sock.close()
        db.dispose()


def test_get_job_answers_304_until_the_job_changes(client: Any, app: Any, auth: dict[str, str]) -> None:
    from trainyard.db.models import Job

    job = client.post("/v1/jobs", json=tiny_spec(), headers=auth).get_json()
    # A copy of it that no worker was ever sent and that is final: nothing but this test changes it (a
    # queued job's position, or a worker, would change its representation between two polls).
    with app.extensions["trainyard"].db.session() as s:
        row = s.get(Job, job["id"])
        still = Job(tenant_id=row.tenant_id, name="etag", status="cancelled", stop_reason="cancelled",
                    spec=row.spec, epochs=row.epochs, resource_class=row.resource_class)
        s.add(still)
        s.flush()
        job_id = still.id
    first = client.get(f"/v1/jobs/{job_id}", headers=auth)
    etag = first.headers["ETag"]
    assert first.status_code == 200 and etag.startswith('"')
    same = client.get(f"/v1/jobs/{job_id}", headers={**auth, "If-None-Match": etag})
    assert same.status_code == 304 and same.get_data() == b"" and same.headers["ETag"] == etag
    with app.extensions["trainyard"].db.session() as s:
        s.get(Job, job_id).name = "renamed behind the poller's back"
    changed = client.get(f"/v1/jobs/{job_id}", headers={**auth, "If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["ETag"] != etag
