"""State shared by the engine's callbacks during one fit."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, Callable

logger = logging.getLogger(__name__)


@dataclass
class RunState:
    """Why training stopped early, and whether the epoch in progress was cut short.

    A cut-short epoch (stop request or non-finite loss mid-epoch) is neither reported nor checkpointed,
    and does not feed early stopping or plateau detection: its metrics cover only part of the data.
    """

    stop_reason: str | None = None
    partial_epoch: bool = False

    def request_stop(self, reason: str, *, partial: bool) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        self.partial_epoch = self.partial_epoch or partial


def call_reporter(fn: Callable[..., Any], *args: Any, what: str = "report") -> bool:
    """Call a reporter method once; never raises an ``Exception``. Returns True when the call succeeded.

    Retrying is the reporter's business (workers/reporting.py retries every write of the database
    reporter): the trainer calls each method once. A reporter that still fails must not kill a training
    run that may have taken hours, so its error is logged and training goes on. A ``BaseException`` (a
    job stop delivered into this thread, workers/interrupt.py) passes through.
    """
    try:
        fn(*args)
        return True
    except Exception:
        logger.exception("%s failed; training continues", what)
        return False


def json_float(value: Any) -> float | None:
    """A float for a JSON document: None for missing or non-finite values (JSON has no inf or NaN)."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


class RestoresCounters:
    """Mixin for Keras callbacks that reset their counters in ``on_train_begin``: the counters a resumed
    run saved (``set_state``) are applied right after that reset, by the subclass' ``apply_state``."""

    _restored: dict | None = None

    def set_state(self, state: dict) -> None:
        self._restored = dict(state)

    def apply_state(self, state: dict) -> None:
        raise NotImplementedError

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)  # type: ignore[misc]
        if self._restored:
            self.apply_state(self._restored)
