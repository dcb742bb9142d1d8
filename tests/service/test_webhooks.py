"""Webhooks end to end: real receivers on 127.0.0.1 (the suite sets TRAINYARD_WEBHOOK_ALLOW_PRIVATE and quick
retries in service_env), the real API under gunicorn and a real worker delivering from the outbox."""
from __future__ import annotations

import dataclasses
import http.server
import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from sqlalchemy import select

from trainyard.db import Database
from trainyard.db.live import WebhookDelivery
from trainyard.webhooks import DELIVERY_HEADER, SIGNATURE_HEADER, TargetRefused, post, signature, verify
from tests.conftest import tiny_spec, wait_until

SECRET = "s3cret-for-the-tests-only"


class Receiver:
    """An HTTP server that records every POST and fails the first `fail_first` of them with 500."""

    def __init__(self, fail_first: int = 0) -> None:
        self.requests: list[dict[str, Any]] = []
        self.fail_first = fail_first
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append({"headers": dict(self.headers), "body": body, "at": time.monotonic()})
                ok = len(receiver.requests) > receiver.fail_first
                self.send_response(200 if ok else 500)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook?source=trainyard"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def delivered(self) -> list[dict[str, Any]]:
        """Bodies of the accepted requests, in order."""
        return [json.loads(r["body"]) for i, r in enumerate(self.requests) if i >= self.fail_first]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def receiver() -> Iterator[Receiver]:
    r = Receiver(fail_first=2)
    yield r
    r.close()


def submit(api_url: str, auth: dict[str, str], **webhook: Any) -> dict[str, Any]:
    resp = requests.post(f"{api_url}/v1/jobs", json=tiny_spec(webhook=webhook), headers=auth, timeout=30)
    assert resp.status_code == 201, resp.text
    return resp.json()


def final(api_url: str, auth: dict[str, str], job_id: str, timeout: float = 90) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        job = requests.get(f"{api_url}/v1/jobs/{job_id}", headers=auth, timeout=30).json()
        return job if job["status"] in ("succeeded", "failed", "cancelled") else None

    return wait_until(ended, timeout, 0.2, f"job {job_id} to end")


def deliveries(settings: Any, job_id: str) -> list[WebhookDelivery]:
    db = Database(settings.database_url)
    try:
        with db.session() as s:
            return list(s.execute(select(WebhookDelivery).where(WebhookDelivery.job_id == job_id)
                                  .order_by(WebhookDelivery.event_seq)).scalars())
    finally:
        db.dispose()


def test_signature_verifies_only_with_the_secret_and_a_fresh_timestamp() -> None:
    body = b'{"id":"whd_1"}'
    header = signature(SECRET, body)
    assert verify(SECRET, header, body)
    assert not verify("another-secret-of-16+", header, body)
    assert not verify(SECRET, header, body + b" ")
    assert not verify(SECRET, signature(SECRET, body, timestamp=int(time.time()) - 3600), body)


def test_signed_deliveries_retried_until_the_receiver_accepts(
        api_url: str, auth: dict[str, str], worker: Any, settings: Any, receiver: Receiver) -> None:
    job = submit(api_url, auth, url=receiver.url, secret=SECRET)
    assert job["spec"]["webhook"] == {"url": receiver.url, "events": ["status"]}
    done = final(api_url, auth, job["id"])
    assert done["status"] == "succeeded"
    wait_until(lambda: any(b["data"]["status"] == "succeeded" for b in receiver.delivered()), 30, 0.1,
               "the final status to be delivered")

    # The first event failed twice and arrived on the third attempt, with one delivery id throughout.
    first_three = receiver.requests[:3]
    assert len({r["headers"][DELIVERY_HEADER] for r in first_three}) == 1
    assert [json.loads(r["body"])["data"]["status"] for r in first_three] == ["queued"] * 3
    # Every request is signed with the job's secret; the body names the job and the status, in order.
    for r in receiver.requests:
        assert verify(SECRET, r["headers"][SIGNATURE_HEADER], r["body"])
        assert not verify("not-the-secret-at-all", r["headers"][SIGNATURE_HEADER], r["body"])
        assert r["headers"]["X-Trainyard-Event"] == "status"
    bodies = receiver.delivered()
    assert [b["data"]["status"] for b in bodies] == ["queued", "running", "succeeded"]
    assert {b["job_id"] for b in bodies} == {job["id"]} and bodies[-1]["data"]["stop_reason"] == "completed"
    assert [b["id"] for b in bodies] == [r["headers"][DELIVERY_HEADER] for r in receiver.requests[2:]]

    rows = deliveries(settings, job["id"])
    assert [(r.state, r.attempts, r.last_status_code) for r in rows] == \
        [("delivered", 3, 200), ("delivered", 1, 200), ("delivered", 1, 200)]
    # The secret never comes back from the API.
    for path in (f"/v1/jobs/{job['id']}", "/v1/jobs"):
        assert SECRET not in requests.get(api_url + path, headers=auth, timeout=30).text
    logs = requests.get(f"{api_url}/v1/jobs/{job['id']}/logs", headers=auth, timeout=30).json()["logs"]
    messages = [line["message"] for line in logs]
    assert any("attempt 1 failed" in m for m in messages) and any("delivered on attempt 3" in m for m in messages)


def test_private_targets_and_bad_webhooks_are_refused_at_submission(settings: Any, auth: dict[str, str]) -> None:
    from service import create_app

    client = create_app(dataclasses.replace(settings, webhook_allow_private=False)).test_client()
    cases = {
        "http://127.0.0.1:9/hook": "webhook.url",
        "http://10.1.2.3/hook": "webhook.url",
        "http://[::1]/hook": "webhook.url",
        "http://169.254.169.254/latest/meta-data": "webhook.url",
        "http://localhost/hook": "webhook.url",
        "ftp://93.184.216.34/hook": "webhook.url",
        "https://user:pw@93.184.216.34/hook": "webhook.url",
    }
    for url, field in cases.items():
        resp = client.post("/v1/jobs", json=tiny_spec(webhook={"url": url, "secret": SECRET}), headers=auth)
        assert resp.status_code == 422, (url, resp.get_json())
        assert [e["field"] for e in resp.get_json()["errors"]] == [field], (url, resp.get_json())
    resp = client.post("/v1/jobs", json=tiny_spec(webhook={"url": "https://93.184.216.34/h", "events": ["logs"]}),
                       headers=auth)
    assert resp.status_code == 422
    assert {e["field"] for e in resp.get_json()["errors"]} == {"webhook.secret", "webhook.events"}


def test_delivery_checks_the_address_again_and_refuses_private_ones(receiver: Receiver) -> None:
    # The name was fine at submission (or the setting changed since): the send itself refuses.
    with pytest.raises(TargetRefused):
        post(receiver.url, b"{}", {}, timeout=1, allow_private=False)
    assert receiver.requests == []
    assert post(receiver.url, b"{}", {}, timeout=1, allow_private=True) == 500  # it does send when allowed


@pytest.fixture()
def dead_receiver() -> Iterator[str]:
    """Accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(50)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/hook"
    stop.set()
    for s in held:
        s.close()
    listener.close()


def test_a_dead_receiver_never_delays_the_job(api_url: str, auth: dict[str, str], worker: Any, settings: Any,
                                              dead_receiver: str) -> None:
    job = submit(api_url, auth, url=dead_receiver, secret=SECRET, events=["status", "epoch"])
    done = final(api_url, auth, job["id"])
    assert done["status"] == "succeeded"
    # The job ended while its very first event (queued) was still being retried against the receiver.
    rows = deliveries(settings, job["id"])
    assert rows and rows[0].state == "pending" and rows[0].delivered_at is None
    wait_until(lambda: deliveries(settings, job["id"])[0].attempts >= 1, 30, 0.2, "a first attempt")
    first = deliveries(settings, job["id"])[0]
    assert "Timeout" in (first.last_error or ""), first.last_error
    # Deleting the job drops its outbox, so nothing keeps knocking on the dead receiver.
    assert requests.delete(f"{api_url}/v1/jobs/{job['id']}", headers=auth, timeout=30).status_code == 204
    assert deliveries(settings, job["id"]) == []
