"""gunicorn settings for bin/api: logging and Prometheus' multiprocess folder, set up once at start-up.

Each API worker process writes its request-latency samples to files in a folder of its own master
(`$TRAINYARD_VAR_DIR/prometheus/api-<master pid>`), so GET /metrics on any worker reports all of them;
folders of masters that are gone are removed when the next one starts. Each worker, once forked
(`post_worker_init`), receives request bodies in the blocks the upload parser reads and sends files with
`os.sendfile`; a gevent worker lets its other connections' requests run after each request it answers
(`post_request`).
"""
from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path
from typing import Any

from gunicorn.glogging import Logger as GunicornLogger

from trainyard.logconfig import configure_logging
from trainyard.settings import Settings


class Logger(GunicornLogger):
    """gunicorn's logger, with the service's logging configured as soon as gunicorn sets up its own (before
    its first line), in the master; workers inherit it when they are forked."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        configure_logging(Settings.from_env())


logger_class = Logger

# gunicorn 25+ serves a control socket (for its `gunicornc` tool) at one path per user,
# $XDG_RUNTIME_DIR/gunicorn.ctl or ~/.gunicorn/gunicorn.ctl, whatever the instance: a second API on the host
# took over the first's socket, and either one's stop removed the other's. The service is run and stopped
# with signals (docker-compose.yml, `make run`); it serves no control socket.
control_socket_disable = True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def on_starting(server: Any) -> None:
    settings = Settings.from_env()
    base = settings.var_dir / "prometheus"
    base.mkdir(parents=True, exist_ok=True)
    for old in base.glob("api-*"):
        pid = old.name.removeprefix("api-")
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    folder = base / f"api-{os.getpid()}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    # Read by prometheus_client when the workers (forked after this) import it.
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)


def cooperative_sendfile(sock: Any, file: Any, offset: int = 0, count: int | None = None) -> int:
    """`socket.sendfile` for a gevent socket that really is `os.sendfile`: the kernel copies the file to the
    socket, and a full socket buffer waits for the socket like gevent's own `send` does, so other greenlets
    run meanwhile. gevent's own `sendfile` reads the file in Python and sends it 8 KiB at a time."""
    out_fd, in_fd = sock.fileno(), file.fileno()
    total = 0
    try:
        while count is None or total < count:
            want = SENDFILE_BLOCK if count is None else min(SENDFILE_BLOCK, count - total)
            try:
                sent = os.sendfile(out_fd, in_fd, offset + total, want)
            except BlockingIOError:
                sock._wait(sock._write_event)  # as gevent's socket.send waits
                continue
            if sent == 0:  # end of file
                break
            total += sent
    finally:
        if total and hasattr(file, "seek"):
            file.seek(offset + total)
    return total


# Bytes per os.sendfile call: the kernel copies them without Python; a greenlet yields between calls
# only when the socket is full.
SENDFILE_BLOCK = 8 * 1024 * 1024


def limit_body_recv(size: int) -> bool:
    """At most `size` bytes per recv() of a request body, the upload form parser's read size
    (service.api.common.UPLOAD_READ_SIZE); gunicorn's own limit is 1 MiB (`SocketUnreader.max_body_chunk`,
    no setting), and 8 KiB while it reads headers. gunicorn keeps what a read did not ask for in a buffer
    that it copies again on every later, smaller read: 1 MiB received and read 256 KiB at a time is each
    byte copied about twice more in Python. Receiving what the parser reads leaves nothing over.
    False, and nothing changed, on a gunicorn whose socket reader takes no size hint (older ones receive
    8 KiB per recv() whatever the reader wants)."""
    from gunicorn.http.unreader import SocketUnreader

    if not isinstance(getattr(SocketUnreader, "max_body_chunk", None), int):
        return False
    SocketUnreader.max_body_chunk = size  # type: ignore[attr-defined]
    return True


def post_worker_init(worker: Any) -> None:
    from service.api.common import UPLOAD_READ_SIZE

    # Uploads (POST /v1/datasets): see limit_body_recv.
    limit_body_recv(UPLOAD_READ_SIZE)
    drain_streams_on_stop(worker)
    # gunicorn sends a file response (checkpoint downloads from a folder store) with `sock.sendfile`.
    if type(worker).__name__ == "GeventWorker":
        from gevent import socket as gevent_socket

        gevent_socket.socket.sendfile = cooperative_sendfile  # type: ignore[method-assign]


def drain_streams_on_stop(worker: Any) -> None:
    """On SIGTERM (a restart, a deploy, `docker compose stop`), end this worker's open event streams at once
    (service/eventhub.py, `EventHub.drain`) and then stop as gunicorn does. gunicorn waits for requests in
    flight, and an event stream is one until its job ends: each open stream held the stop for the whole
    graceful timeout (10 s), then was cut mid-response (the client saw a broken chunked body)."""
    extensions = getattr(getattr(worker, "wsgi", None), "extensions", None)
    hub = extensions.get("trainyard_events") if isinstance(extensions, dict) else None
    if hub is None:  # not the service's app (this config serving another WSGI app): nothing to drain
        return
    gunicorn_handler = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: Any) -> None:
        hub.drain()
        if callable(gunicorn_handler):
            gunicorn_handler(signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)


def post_request(worker: Any, req: Any, environ: Any, resp: Any) -> None:
    """After each response of a gevent worker, let the worker's other greenlets run before this connection's
    next request. gevent switches greenlets only when a socket would block: a keep-alive client that sends
    its next request as soon as it has read a response finds the worker's `recv` ready at once, so one busy
    connection could be served again and again while the worker's other connections wait (measured with
    `make bench-status`: p50 well under a millisecond with a p99 of a second, for the bare app as for the
    API). Waiting for the event loop to be idle after each response puts this connection behind every other
    that is ready (`gevent.sleep(0)` does not: it may resume this greenlet before the loop polls sockets). A
    loop that is never idle (sockets ready on every turn) would hold this connection for ever: it waits at
    most `FAIR_YIELD_SECONDS`."""
    if type(worker).__name__ == "GeventWorker":
        import gevent

        with gevent.Timeout(FAIR_YIELD_SECONDS, False):
            gevent.idle()


# The longest a gevent worker holds a connection's next request back for its other connections (post_request).
FAIR_YIELD_SECONDS = 0.005


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder and Path(folder).name == f"api-{os.getpid()}":
        shutil.rmtree(folder, ignore_errors=True)
