"""A data set sent as the request body, through gunicorn (`bin/api`, both worker classes), read from the
server's input stream by Content-Length (service.api.common.receive_body): every byte arrives, a keep-alive
connection's next request starts where the body ends (also when it was sent in the same packets as the
upload), and a body that ends early is a 400 problem with nothing stored."""
from __future__ import annotations

import hashlib
import http.client
import io
import json
import re
import socket
import urllib.parse
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from tests.conftest import start_api


@pytest.fixture(scope="module", params=["gevent", "gthread"])
def api(request: pytest.FixtureRequest, service_env: dict[str, str],
        tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`bin/api` with each worker class: each receives the body from its own kind of socket."""
    proc, url = start_api({**service_env, "TRAINYARD_API_WORKER_CLASS": request.param},
                          tmp_path_factory.mktemp("logs") / f"api-{request.param}.log")
    yield url
    proc.stop()


def npz_bytes(rows: int) -> bytes:
    x = np.random.default_rng(rows).normal(size=(rows, 8)).astype("float32")
    buf = io.BytesIO()
    np.savez(buf, x_train=x, y_train=(x[:, 0] > 0).astype("int64"))
    return buf.getvalue()


def head(path: str, headers: dict[str, str], length: int) -> bytes:
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/octet-stream",
             f"Content-Length: {length}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def test_a_large_body_arrives_whole_and_the_connection_goes_on(api: str, auth: dict[str, str]) -> None:
    content = npz_bytes(200_000)  # about 8 MB: many reads, and more than one of the spool's 4 MiB hand-overs
    parts = urllib.parse.urlsplit(api)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        conn.request("POST", "/v1/datasets?name=wire.npz", body=content,
                     headers={**auth, "Content-Type": "application/octet-stream"})
        resp = conn.getresponse()
        body = json.loads(resp.read())
        assert resp.status == 201, body
        assert body["sha256"] == hashlib.sha256(content).hexdigest() and body["size"] == len(content)
        assert body["splits"]["train"] == 200_000
        # The same connection: the next request is read from where the body ended.
        conn.request("GET", f"/v1/datasets/{body['id']}", headers=auth)
        again = conn.getresponse()
        assert again.status == 200 and json.loads(again.read())["sha256"] == body["sha256"]
    finally:
        conn.close()


def test_a_request_sent_behind_the_body_is_answered_after_it(api: str, auth: dict[str, str]) -> None:
    content = npz_bytes(20)  # small: gunicorn reads it with the headers, and the next request with it
    second = b"GET /v1/datasets/builtin:iris HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" + \
        "".join(f"{k}: {v}\r\n" for k, v in auth.items()).encode() + b"\r\n"
    parts = urllib.parse.urlsplit(api)
    with socket.create_connection((parts.hostname, parts.port), timeout=60) as sock:
        sock.sendall(head("/v1/datasets?name=pipelined.npz", auth, len(content)) + content + second)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    first, _, rest = received.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 201"), received[:2000]
    length = int(re.search(rb"(?i)\r\ncontent-length: (\d+)", first).group(1))  # type: ignore[union-attr]
    assert json.loads(rest[:length])["sha256"] == hashlib.sha256(content).hexdigest()
    second_head, _, second_body = rest[length:].partition(b"\r\n\r\n")
    assert second_head.startswith(b"HTTP/1.1 200"), received[:2000]
    assert json.loads(second_body)["id"] == "builtin:iris"


def test_a_body_that_ends_early_is_a_400_and_nothing_is_kept(api: str, auth: dict[str, str]) -> None:
    content = npz_bytes(2_000)
    parts = urllib.parse.urlsplit(api)
    with socket.create_connection((parts.hostname, parts.port), timeout=60) as sock:
        sock.sendall(head("/v1/datasets?name=truncated.npz", auth, len(content) + 5000) + content)
        sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    status_line, _, rest = received.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 400"), received[:2000]
    problem: dict[str, Any] = json.loads(rest.partition(b"\r\n\r\n")[2])
    assert f"ended after {len(content)} of the {len(content) + 5000} bytes" in problem["detail"]
    import requests

    listed = requests.get(f"{api}/v1/datasets", headers=auth, timeout=30).json()["datasets"]
    assert "truncated.npz" not in {d["name"] for d in listed}

