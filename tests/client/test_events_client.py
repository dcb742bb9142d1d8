"""`Trainyard.events` against the live API, and `trainyard watch` on a server without the events endpoint."""
from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from client import Event, NotFound, Trainyard
from tests.client.conftest import RunCli


def test_events_yield_status_then_each_epoch_then_end(ty: Trainyard, done_job: dict[str, Any]) -> None:
    events = list(ty.events(done_job["id"]))
    assert all(isinstance(e, Event) for e in events)
    assert events[0].event == "status" and events[0].data["job"]["id"] == done_job["id"]
    assert [e.data for e in events if e.event == "epoch"] == ty.metrics(done_job["id"])
    assert events[-1].event == "end" and events[-1].data == {"status": "succeeded"}
    # Resuming after the second epoch's id yields only what followed it.
    second = next(e.id for e in events if e.event == "epoch" and e.data["epoch"] == 2)
    rest = list(ty.events(done_job["id"], last_event_id=second))
    assert [e.data["epoch"] for e in rest if e.event == "epoch"] == [3, 4]
    assert rest[-1].event == "end"


def test_events_of_an_unknown_job_raise_not_found(ty: Trainyard) -> None:
    with pytest.raises(NotFound):
        next(ty.events("job_" + "0" * 32))


@pytest.fixture()
def server_without_events(api_url: str) -> Iterator[str]:
    """A real HTTP proxy to the API that answers 404 (as the API does for unknown paths) for /events,
    like a server from before the endpoint existed."""

    class Proxy(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path.split("?")[0].endswith("/events"):
                body = b'{"type":"https://trainyard.dev/problems/not_found","title":"Not found","status":404}'
                self.send_response(404)
                self.send_header("Content-Type", "application/problem+json")
            else:
                upstream = requests.get(api_url + self.path, headers={"Authorization": self.headers["Authorization"]},
                                        timeout=30)
                body = upstream.content
                self.send_response(upstream.status_code)
                self.send_header("Content-Type", upstream.headers["Content-Type"])
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_watch_falls_back_to_polling_without_the_events_endpoint(
        run_cli: RunCli, done_job: dict[str, Any], server_without_events: str) -> None:
    direct = run_cli("watch", done_job["id"])
    polled = run_cli("watch", done_job["id"], "--poll", "0.1", env={"TRAINYARD_URL": server_without_events})
    assert polled.exit_code == direct.exit_code == 0, polled.output
    assert polled.stdout == direct.stdout
    assert len([line for line in polled.stdout.splitlines() if line.startswith("epoch ")]) == 4
