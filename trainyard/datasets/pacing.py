"""Letting a gevent worker (bin/api) serve its other requests while it checks a large upload.

Checks are CPU work in slices (a block at a time); every `SLICE_SECONDS` of it, `Pacer.tick` sleeps a
millisecond. Under gevent's monkey-patching that is a yield until the next turn of the event loop, where
sockets and timers are served (`sleep(0)` only runs greenlets already ready, and can starve sockets); in a
plain process it costs about 2 % of a long check.
"""
from __future__ import annotations

import time

SLICE_SECONDS = 0.05


class Pacer:
    def __init__(self) -> None:
        self._since = time.monotonic()

    def tick(self) -> None:
        if time.monotonic() - self._since >= SLICE_SECONDS:
            time.sleep(0.001)
            self._since = time.monotonic()
