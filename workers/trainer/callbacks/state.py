"""State shared by the engine's callbacks during one fit."""

from __future__ import annotations

import logging
import math
import time
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


def call_with_retry(
    fn: Callable[..., Any], *args: Any, attempts: int = 3, delay: float = 0.2, what: str = "report"
) -> bool:
    """Call a reporter method, retrying briefly; never raises. Returns True when the call succeeded.

    A metric sink that is briefly down must not kill a training run that may have taken hours.
    """
    for attempt in range(1, attempts + 1):
        try:
            fn(*args)
            return True
        except Exception:
            if attempt == attempts:
                logger.exception("%s failed after %d attempts; training continues", what, attempts)
                return False
            logger.warning("%s failed (attempt %d/%d); retrying", what, attempt, attempts,
                           exc_info=True)
            time.sleep(delay)
    return False


def json_float(value: Any) -> float | None:
    """A float for a JSON document: None for missing or non-finite values (JSON has no inf or NaN)."""
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def validate_retry(attempts: int, delay: float) -> None:
    if not isinstance(attempts, int) or attempts < 1:
        raise ValueError(f"retry attempts must be an int >= 1, got {attempts!r}")
    if delay < 0:
        raise ValueError(f"retry delay must be >= 0, got {delay!r}")


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
