"""Behaviour of the fast paths: the token cache, folder-store downloads handed to the server as a file, and
uploads received and parsed in large blocks."""
from __future__ import annotations

import hashlib
import io
import time
from pathlib import Path
from typing import Any

import pytest

from service.auth import Principal, TokenCache
from tests.conftest import tiny_spec


def test_token_cache_expires_and_is_bounded() -> None:
    p = Principal(tenant_id="tn_1", tenant_name="acme", token_id="tok_1")
    cache = TokenCache(ttl=0.2, max_entries=2)
    cache.put("a", p)
    assert cache.get("a") == p
    time.sleep(0.25)
    assert cache.get("a") is None
    cache.put("a", p)
    cache.put("b", p)
    cache.put("c", p)  # full: older entries go, memory stays bounded
    assert cache.get("c") == p and len(cache._entries) <= 2
    off = TokenCache(ttl=0)
    off.put("a", p)
    assert off.get("a") is None


def test_revoked_token_works_at_most_the_cache_ttl(app: Any, client: Any) -> None:
    from service.auth import create_token, revoke_token

    assert app.extensions["trainyard"].settings.token_cache_seconds == 1
    with app.extensions["trainyard"].db.session() as s:
        issued = create_token(s, "cache-tenant")
    headers = {"Authorization": f"Bearer {issued.token}"}
    assert client.get("/v1/jobs", headers=headers).status_code == 200
    with app.extensions["trainyard"].db.session() as s:
        assert revoke_token(s, issued.token_id)
    revoked_at = time.monotonic()
    # Answered from the cache without the database for the TTL...
    assert client.get("/v1/jobs", headers=headers).status_code == 200
    # ...and refused once it runs out.
    while client.get("/v1/jobs", headers=headers).status_code != 401:
        assert time.monotonic() - revoked_at < 3, "a revoked token outlived the cache TTL"
        time.sleep(0.05)
    # Unknown tokens are never cached: one created now works at once.
    with app.extensions["trainyard"].db.session() as s:
        fresh = create_token(s, "cache-tenant")
    assert client.get("/v1/jobs", headers={"Authorization": f"Bearer {fresh.token}"}).status_code == 200


def test_folder_store_download_whole_and_ranges(settings: Any, make_token: Any, tmp_path: Path) -> None:
    from dataclasses import replace

    from service import create_app
    from trainyard.db.models import Checkpoint
    from trainyard.store import checkpoint_key

    app = create_app(replace(settings, artifact_url=f"file://{tmp_path}/artifacts"))
    client = app.test_client()
    headers = {"Authorization": f"Bearer {make_token('folder-tenant')}"}
    job_id = client.post("/v1/jobs", json=tiny_spec(), headers=headers).get_json()["id"]
    svc = app.extensions["trainyard"]
    data = bytes(range(256)) * 5000  # 1.28 MB: more than one read block
    key = checkpoint_key(job_id, 1)
    meta = svc.store.put(key, io.BytesIO(data))
    assert svc.store.local_file(key) is not None
    with svc.db.session() as s:
        s.add(Checkpoint(job_id=job_id, epoch=1, monitor="loss", value=0.5, artifact_key=key,
                         size_bytes=meta.size, sha256=meta.sha256, is_best=True))
    url = f"/v1/jobs/{job_id}/checkpoints/best"
    whole = client.get(url, headers=headers)
    assert whole.status_code == 200 and whole.data == data
    assert whole.headers["Content-Length"] == str(len(data))
    assert hashlib.sha256(whole.data).hexdigest() == whole.headers["ETag"].strip('"')
    tail = client.get(url, headers={**headers, "Range": "bytes=1000000-"})
    assert tail.status_code == 206 and tail.data == data[1000000:]
    middle = client.get(url, headers={**headers, "Range": "bytes=10-19"})
    assert middle.status_code == 206 and middle.data == data[10:20]
    svc.db.dispose()


def test_keyset_pages_cover_every_job_once_across_equal_timestamps(app: Any, client: Any, make_token: Any) -> None:
    from datetime import datetime, timedelta, timezone

    from sqlalchemy import select

    from trainyard.db.models import Job, Tenant
    from trainyard.job_errors import JobError
    from trainyard.lifecycle import failure

    headers = {"Authorization": f"Bearer {make_token('keyset-tenant')}"}
    db = app.extensions["trainyard"].db
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    # Seven jobs share one timestamp, so page boundaries fall between equal created_at values.
    stamps = [t0] * 7 + [t0 + timedelta(seconds=1), t0 - timedelta(seconds=1), t0 + timedelta(seconds=2)]
    with db.session() as s:
        tenant = s.execute(select(Tenant.id).where(Tenant.name == "keyset-tenant")).scalar_one()
        # A failed job always carries its error (trainyard/job_errors.py); the database refuses one without.
        ended = [failure(JobError.NAN_LOSS, "The loss became NaN.") if i % 3 else {"status": "succeeded"}
                 for i in range(len(stamps))]
        jobs = [Job(tenant_id=tenant, name=f"k{i}", spec={}, epochs=1, created_at=ts, **ended[i])
                for i, ts in enumerate(stamps)]
        s.add_all(jobs)
    expected = [j.id for j in sorted(jobs, key=lambda j: (j.created_at, j.id), reverse=True)]
    for limit, status in ((2, None), (3, None), (1, "failed")):
        seen: list[str] = []
        cursor = None
        while True:
            url = f"/v1/jobs?limit={limit}" + (f"&status={status}" if status else "") + (f"&cursor={cursor}" if cursor else "")
            body = client.get(url, headers=headers).get_json()
            seen += [j["id"] for j in body["jobs"]]
            cursor = body["next_cursor"]
            if cursor is None:
                break
        want = [i for i in expected if status is None or next(j for j in jobs if j.id == i).status == status]
        assert seen == want, (limit, status)


def test_metrics_body_is_the_rows_values_with_their_epoch(app: Any, client: Any, make_token: Any) -> None:
    from sqlalchemy import select

    from trainyard.db.models import EpochMetrics, Job, Tenant

    headers = {"Authorization": f"Bearer {make_token('metrics-tenant')}"}
    db = app.extensions["trainyard"].db
    rows = {1: {"loss": 0.5, "val_loss": 0.625, "accuracy": 0.75, "learning_rate": 1e-05}, 2: {},
            3: {"loss": 0.25, "note": 'a "quoted" } brace'}}
    with db.session() as s:
        tenant = s.execute(select(Tenant.id).where(Tenant.name == "metrics-tenant")).scalar_one()
        job = Job(tenant_id=tenant, name="m", status="running", spec={}, epochs=3)
        s.add(job)
        s.flush()
        s.add_all(EpochMetrics(job_id=job.id, epoch=e, values=v) for e, v in rows.items())
    resp = client.get(f"/v1/jobs/{job.id}/metrics", headers=headers)
    assert resp.status_code == 200 and resp.mimetype == "application/json"
    assert resp.get_json() == {"epochs": [{"epoch": e, **v} for e, v in rows.items()]}
    assert client.get(f"/v1/jobs/{job.id}/metrics?after=2", headers=headers).get_json() == {
        "epochs": [{"epoch": 3, **rows[3]}]}
    assert client.get(f"/v1/jobs/{job.id}/metrics?after=3", headers=headers).get_json() == {"epochs": []}


def test_folder_store_upload_is_stored_with_the_hash_of_its_bytes(settings: Any, make_token: Any,
                                                                  tmp_path: Path) -> None:
    # The folder store takes the form parser's spooled file (hard link, hashed while written); what it
    # holds must be exactly the uploaded bytes, under the sha256 the API reports.
    from dataclasses import replace

    import numpy as np

    from service import create_app

    app = create_app(replace(settings, artifact_url=f"file://{tmp_path}/artifacts"))
    client = app.test_client()
    headers = {"Authorization": f"Bearer {make_token('upload-tenant')}"}
    buf = io.BytesIO()
    np.savez(buf, x_train=np.arange(4000, dtype=np.float32).reshape(1000, 4), y_train=np.arange(1000) % 3)
    data = buf.getvalue()
    resp = client.post("/v1/datasets", headers=headers, data={"file": (io.BytesIO(data), "d.npz")},
                       content_type="multipart/form-data")
    assert resp.status_code == 201, resp.get_json()
    body = resp.get_json()
    assert body["size"] == len(data) and body["sha256"] == hashlib.sha256(data).hexdigest()
    svc = app.extensions["trainyard"]
    key = f"datasets/{body['id']}"
    assert Path(svc.store.local_file(key)).read_bytes() == data
    assert svc.store.stat(key).sha256 == body["sha256"]
    assert not list(svc.settings.var_dir.glob("upload-*"))  # the spool itself is gone
    svc.db.dispose()


def test_the_upload_spool_hashes_and_writes_on_another_thread_and_reads_back_exactly(tmp_path: Path) -> None:
    # The form parser's spool hands batches of blocks to a thread that hashes and writes them while the
    # parser goes on; whatever then reads the file (seek, read, the sha256) first waits for that thread.
    import random
    import threading

    from service.api import common

    writers: set[int] = set()
    absorb = common.SpooledUpload._absorb

    def recording_absorb(self: Any, blocks: list[bytes]) -> None:
        writers.add(threading.get_ident())
        absorb(self, blocks)

    rng = random.Random(7)
    blocks = [rng.randbytes(rng.randint(1, 600_000)) for _ in range(50)]  # ~15 MB: three batches and a rest
    spool = common.SpooledUpload(str(tmp_path))
    spool._absorb = recording_absorb.__get__(spool)  # type: ignore[method-assign]
    for block in blocks:
        assert spool.write(block) == len(block)
    data = b"".join(blocks)
    assert spool.size == len(data) > 3 * common.SPOOL_BATCH_BYTES
    assert spool.sha256() == hashlib.sha256(data).hexdigest()
    spool.seek(0)
    assert spool.read() == data
    assert writers and threading.get_ident() not in writers
    spool.close()
    assert not list(tmp_path.iterdir())


def test_gevent_workers_hand_file_responses_to_the_kernel(tmp_path: Path) -> None:
    # bin/api's gevent workers send a folder store's file with this in place of gevent's socket.sendfile
    # (which reads the file in Python, 8 KiB at a time): os.sendfile, waiting cooperatively while the socket
    # is full, from the offset gunicorn gives, and the file left where the bytes sent end.
    import os

    import gevent
    import gevent.socket

    from service.gunicorn_conf import cooperative_sendfile

    class NotReadInPython(io.FileIO):
        def read(self, *args: Any) -> bytes:
            raise AssertionError("the file was read in Python")

        readinto = read  # type: ignore[assignment]

    data = os.urandom(6 * 1024 * 1024)
    path = tmp_path / "artifact.bin"
    path.write_bytes(data)
    out, into = gevent.socket.socketpair()  # both far smaller buffers than the file: sendfile must wait
    received = bytearray()

    def reader() -> None:
        while len(received) < len(data) - 1000:
            chunk = into.recv(1 << 20)
            if not chunk:
                break
            received.extend(chunk)

    with gevent.Timeout(60), NotReadInPython(path, "rb") as fh:
        greenlet = gevent.spawn(reader)
        sent = cooperative_sendfile(out, fh, offset=1000, count=len(data) - 1000)
        greenlet.join()
        assert fh.tell() == len(data)
    out.close()
    into.close()
    assert sent == len(data) - 1000
    assert hashlib.sha256(received).hexdigest() == hashlib.sha256(data[1000:]).hexdigest()


class _RecordingSocket:
    """A socket that serves `data` and records the size of every recv() asked of it."""

    def __init__(self, data: bytes) -> None:
        self.data = io.BytesIO(data)
        self.asked: list[int] = []

    def recv(self, size: int) -> bytes:
        self.asked.append(size)
        return self.data.read(size)


def test_gunicorn_workers_receive_a_body_no_faster_than_the_form_parser_reads_it(monkeypatch: Any) -> None:
    # bin/api's workers run post_worker_init: a request body of known length is then received at most
    # UPLOAD_READ_SIZE per recv(), what the form parser reads at a time, so gunicorn keeps nothing over to
    # copy again on the next read (gunicorn's own limit is 1 MiB).
    from gunicorn.config import Config
    from gunicorn.http.parser import RequestParser
    from gunicorn.http.unreader import SocketUnreader

    from service import gunicorn_conf
    from service.api.common import UPLOAD_READ_SIZE

    monkeypatch.setattr(SocketUnreader, "max_body_chunk", SocketUnreader.max_body_chunk)  # restored after
    gunicorn_conf.post_worker_init(object())
    body = bytes(range(256)) * (4 * UPLOAD_READ_SIZE // 256)
    sock = _RecordingSocket(b"POST /v1/datasets HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    request = next(RequestParser(Config(), sock, ("127.0.0.1", 1)))
    received = bytearray()
    while block := request.body.read(UPLOAD_READ_SIZE):
        assert len(block) <= UPLOAD_READ_SIZE
        received += block
    assert received == body
    assert max(sock.asked) == UPLOAD_READ_SIZE


def test_the_form_parser_reads_an_upload_in_large_blocks_and_keeps_its_limits(app: Any) -> None:
    from flask import request
    from werkzeug.datastructures import FileStorage
    from werkzeug.exceptions import RequestEntityTooLarge
    from werkzeug.test import encode_multipart

    from service.api.common import UPLOAD_READ_SIZE

    class Recording(io.BytesIO):
        def __init__(self, data: bytes) -> None:
            super().__init__(data)
            self.asked: list[int] = []

        def read(self, size: int | None = -1) -> bytes:
            self.asked.append(size or -1)
            return super().read(size)

    content = bytes(range(256)) * (3 * UPLOAD_READ_SIZE // 256)
    boundary, body = encode_multipart({"file": FileStorage(io.BytesIO(content), "d.npz"), "target": "y"})
    with app.test_request_context(method="POST"):
        parser = request.make_form_data_parser()  # the app's own, with its limits
        limit = request.max_form_memory_size
        stream = Recording(body)
        _stream, form, files = parser.parse(stream, "multipart/form-data", len(body), {"boundary": boundary})
        assert files["file"].read() == content and form["target"] == "y"
        files["file"].close()
        # werkzeug's own parser reads 64 KiB at a time, and gunicorn copied what it held over on every read.
        assert max(stream.asked) == UPLOAD_READ_SIZE
        # A block stays below the limit on text fields, which werkzeug checks on every block it buffers;
        # a text field over that limit is still refused.
        assert limit is not None and UPLOAD_READ_SIZE < limit
        boundary, body = encode_multipart({"notes": "x" * (limit + 1)})
        with pytest.raises(RequestEntityTooLarge):
            parser.parse(io.BytesIO(body), "multipart/form-data", len(body), {"boundary": boundary})


_FAIRNESS_APP = '''
import os, time
from pathlib import Path
from gevent import monkey

real_sleep = monkey.get_original("time", "sleep")
order = []


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/block":  # holds the whole worker (no greenlet switch) until the test releases it
        folder = Path(os.environ["FAIRNESS_DIR"])
        (folder / "started").touch()
        deadline = time.monotonic() + 60
        while not (folder / "release").exists() and time.monotonic() < deadline:
            real_sleep(0.01)
    elif path != "/order":
        order.append(path.strip("/"))
    body = (",".join(order) if path == "/order" else "ok").encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''


def _read_responses(sock: Any, count: int) -> list[bytes]:
    """`count` HTTP/1.1 responses with a Content-Length from a blocking socket; their bodies."""
    buf, bodies = b"", []
    while len(bodies) < count:
        while b"\r\n\r\n" not in buf:
            chunk = sock.recv(65536)
            assert chunk, "the server closed the connection"
            buf += chunk
        head, buf = buf.split(b"\r\n\r\n", 1)
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
        while len(buf) < length:
            buf += sock.recv(65536)
        bodies.append(buf[:length])
        buf = buf[length:]
    return bodies


def test_a_gevent_worker_serves_its_other_connections_between_one_connections_requests(tmp_path: Path) -> None:
    # bin/api's worker class and config (service.gunicorn_conf), one worker. Connection A sends 40 requests
    # at once behind one that holds the worker; connection B sends one request while it is held. gevent
    # switches greenlets only when a socket would block and A's requests are all there, so without the
    # config's post_request yield the worker answers all 40 of A's before it even accepts B.
    import os
    import socket
    import subprocess
    import sys

    from tests.conftest import free_port, subprocess_env, wait_until

    (tmp_path / "fairness_app.py").write_text(_FAIRNESS_APP)
    port = free_port()
    env = subprocess_env({"FAIRNESS_DIR": str(tmp_path), "TRAINYARD_VAR_DIR": str(tmp_path / "var")})
    root = Path(__file__).resolve().parents[2]
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--config", "python:service.gunicorn_conf", "--bind", f"127.0.0.1:{port}",
         "--workers", "1", "--worker-class", "gevent", "--access-logfile", os.devnull,
         "--pythonpath", str(tmp_path), "fairness_app:app"],
        cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def connect() -> socket.socket | None:
            try:
                return socket.create_connection(("127.0.0.1", port), timeout=30)
            except OSError:
                return None

        a = wait_until(connect, timeout=60, what="gunicorn to listen")
        a.sendall(b"GET /block HTTP/1.1\r\nHost: x\r\n\r\n"
                  + b"".join(b"GET /a%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(40)))
        wait_until(lambda: (tmp_path / "started").exists(), timeout=60, what="the worker to hold")
        b = socket.create_connection(("127.0.0.1", port), timeout=30)
        b.sendall(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
        (tmp_path / "release").touch()
        assert _read_responses(b, 1) == [b"ok"]
        assert len(_read_responses(a, 41)) == 41
        c = socket.create_connection(("127.0.0.1", port), timeout=30)
        c.sendall(b"GET /order HTTP/1.1\r\nHost: x\r\n\r\n")
        order = _read_responses(c, 1)[0].decode().split(",")
        for s in (a, b, c):
            s.close()
    finally:
        server.terminate()
        server.wait(30)
    assert sorted(order) == sorted(["b"] + [f"a{i}" for i in range(40)])
    assert order.index("b") <= 3, order  # B waited for at most the few of A's requests already under way


def test_the_yield_after_a_response_ends_even_when_the_worker_is_never_idle() -> None:
    # Two greenlets that ping-pong over a socket pair keep a socket ready on every turn of the event loop, as a
    # busy worker's connections can: the loop is never idle, and the yield still returns (within its bound).
    import gevent
    import gevent.socket

    from service.gunicorn_conf import FAIR_YIELD_SECONDS, post_request

    class GeventWorker:  # the worker class is told by its name (gunicorn's own is imported only under gevent)
        pass

    a, b = gevent.socket.socketpair()
    playing = True

    def ping_pong(sock: Any, serve: bool) -> None:
        if serve:
            sock.sendall(b"x")
        while playing:
            sock.recv(1)
            sock.sendall(b"x")

    players = [gevent.spawn(ping_pong, a, True), gevent.spawn(ping_pong, b, False)]
    try:
        gevent.sleep(0.01)
        with gevent.Timeout(5, AssertionError("the yield waited for an idle loop that never came")):
            post_request(GeventWorker(), None, {}, None)
    finally:
        playing = False
        gevent.killall(players)
        a.close()
        b.close()
    assert FAIR_YIELD_SECONDS <= 0.01
