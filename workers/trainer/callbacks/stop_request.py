"""Stop at a batch boundary when the reporter asks (cancel) or the runtime limit passes."""

from __future__ import annotations

import logging
import time
from typing import Callable

import keras

from trainyard.stop_reasons import StopReason

from .state import RunState

logger = logging.getLogger(__name__)


class StopRequest(keras.callbacks.Callback):
    """Polls ``should_stop()`` after every training batch and stops training right there.

    Kept O(1) per batch because it runs synchronously between steps: the reporter throttles its own
    I/O (design.md), and the runtime limit is one clock read. ``deadline`` is a ``time.monotonic()``
    value, so the limit can count from the start of the job rather than the start of fit.
    """

    def __init__(
        self,
        should_stop: Callable[[], str | None],
        state: RunState,
        deadline: float | None = None,
    ) -> None:
        super().__init__()
        if not callable(should_stop):
            raise TypeError("should_stop must be callable")
        if not isinstance(state, RunState):
            raise TypeError("state must be a RunState")
        if deadline is not None and not isinstance(deadline, (int, float)):
            raise TypeError(f"deadline must be a monotonic time or None, got {deadline!r}")
        self._should_stop = should_stop
        self._state = state
        self._deadline = deadline
        self._failures = 0

    def on_train_batch_end(self, batch, logs=None):
        reason = self._poll()
        if reason is None and self._deadline is not None and time.monotonic() >= self._deadline:
            reason = StopReason.MAX_RUNTIME
        if reason is None:
            return
        steps = self.params.get("steps") if self.params else None
        # A stop on the last batch leaves a complete epoch, which is still worth reporting.
        partial = steps is None or batch + 1 < steps
        self._state.request_stop(reason, partial=partial)
        self.model.stop_training = True

    def on_test_batch_end(self, batch, logs=None):
        # fit still validates an epoch it cut short, and that epoch is never reported: one batch is enough.
        if self._state.partial_epoch:
            self.model.stop_evaluating = True

    def _poll(self) -> str | None:
        try:
            reason = self._should_stop()
        except Exception:
            self._failures += 1
            # Once, then every 1000th: this runs per batch and must not flood the log.
            if self._failures == 1 or self._failures % 1000 == 0:
                logger.exception("should_stop() failed (%d times); training continues", self._failures)
            return None
        if not reason:
            return None
        requested = StopReason.parse(reason)
        if requested is None or not requested.requestable:
            logger.warning("should_stop() returned unknown reason %r; treating as 'cancelled'", reason)
            return StopReason.CANCELLED
        return reason
