"""psycopg's waits on a gevent I/O watcher, for processes gevent has monkey-patched (the API's gunicorn
gevent workers).

psycopg cannot use its C wait there (it would block every greenlet of the process), so it falls back to
`waiting.wait_poll` on gevent's emulation of `select.poll`: a poll object, a registration and a set of
watchers built for every wait, several waits per query. That was about 250 us of CPU per query in the
status poll, a quarter of its whole cost (1,107 us against 860 us for the same request unpatched). Here one
libev watcher waits for the socket, and the real (unpatched) `poll` with a zero timeout reports which of
read and write is ready, as psycopg's generators need to know.

`install()` replaces `psycopg.waiting.wait`, which every psycopg connection calls through the module (its
own documented switch, `PSYCOPG_WAIT_FUNC`, only chooses among psycopg's functions); it does nothing in a
process gevent has not patched (workers, tools, tests) or where `PSYCOPG_WAIT_FUNC` says otherwise.
"""
from __future__ import annotations

import os
import sys
from time import monotonic
from typing import Any

from psycopg import errors, waiting


def gevent_patched() -> bool:
    monkey = sys.modules.get("gevent.monkey")
    return bool(monkey is not None and monkey.is_module_patched("select"))


def install() -> bool:
    """Use `wait_gevent` for every psycopg connection of this process; True when it was installed."""
    if not gevent_patched() or "PSYCOPG_WAIT_FUNC" in os.environ:
        return False
    waiting.wait = wait_gevent
    return True


_poll_cache: list[Any] = []


def _real_poll() -> Any:
    if not _poll_cache:
        from gevent import monkey
        _poll_cache.append(monkey.get_original("select", "poll"))
    return _poll_cache[0]


def _ready_now(fileno: int, wanted: int) -> int:
    """Which of `wanted` (psycopg's Wait.R/W/RW bits) the socket is ready for right now, without blocking."""
    import select

    poller = _real_poll()()
    poller.register(fileno, (select.POLLIN if wanted & waiting.WAIT_R else 0)
                    | (select.POLLOUT if wanted & waiting.WAIT_W else 0))
    ready = 0
    for _fd, ev in poller.poll(0):
        if ev & select.POLLIN:
            ready |= waiting.READY_R
        if ev & select.POLLOUT:
            ready |= waiting.READY_W
        if not ready and ev & waiting.POLL_BAD:
            raise errors.OperationalError("connection socket closed")
    return ready


def wait_gevent(gen: Any, fileno: int, interval: float = 0.0, timeout: float | None = None) -> Any:
    """Drive psycopg's generator `gen` on `fileno` like `waiting.wait_poll`, parking only this greenlet.

    `interval` (psycopg's wake-up to notice Ctrl-C) is not needed: a signal reaches gevent's hub, not a
    blocked poll. `timeout` is honoured: psycopg's `_WaitTimeout` after that many seconds."""
    from gevent import get_hub
    from gevent.socket import wait as wait_on_watcher

    deadline = None if timeout is None else monotonic() + timeout
    try:
        state = next(gen)
        hub = get_hub()
        while True:
            ready = _ready_now(fileno, state)
            if not ready:
                # libev's READ and WRITE bits are psycopg's Wait.R and Wait.W (1 and 2).
                watcher = hub.loop.io(fileno, int(state))
                try:
                    if deadline is None:
                        wait_on_watcher(watcher)
                    else:
                        wait_on_watcher(watcher, timeout=max(0.0, deadline - monotonic()),
                                        timeout_exc=errors._WaitTimeout("wait timeout expired"))
                finally:
                    watcher.close()
                ready = _ready_now(fileno, state)
                if not ready:  # woken without readiness (a spurious wake-up): look again
                    continue
            state = gen.send(ready)
            if deadline is not None and monotonic() >= deadline:
                raise errors._WaitTimeout("wait timeout expired")
    except StopIteration as stop:
        return stop.value
