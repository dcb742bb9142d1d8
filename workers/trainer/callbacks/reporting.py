"""Report each completed epoch's metrics, learning rate and duration to the reporter."""

from __future__ import annotations

import logging
import math
import time

import keras

from .state import RunState, call_reporter

logger = logging.getLogger(__name__)


def current_learning_rate(optimizer) -> float:
    """The rate the optimizer applies at its next step: a schedule evaluated at ``iterations``."""
    value = optimizer.learning_rate  # a Variable, or a tensor from the schedule
    return float(value.numpy() if hasattr(value, "numpy") else value)


class EpochReporter(keras.callbacks.Callback):
    """Calls ``reporter.epoch_end(epoch, logs)`` with epochs counted from 1.

    ``learning_rate`` is read when the epoch begins: for a schedule that is its value at the epoch's
    first step, for a plateau-reduced rate the value in force during the whole epoch (plateau reduction
    happens at epoch end). ``seconds`` covers training and validation of the epoch.
    """

    def __init__(self, reporter, state: RunState) -> None:
        super().__init__()
        if not callable(getattr(reporter, "epoch_end", None)):
            raise TypeError("reporter must have an epoch_end(epoch, logs) method")
        if not isinstance(state, RunState):
            raise TypeError("state must be a RunState")
        self._reporter = reporter
        self._state = state
        self._started = 0.0
        self._learning_rate: float | None = None
        self.epochs_reported = 0

    def get_state(self) -> dict:
        return {"epochs_reported": self.epochs_reported}

    def set_state(self, state: dict) -> None:
        self.epochs_reported = int(state.get("epochs_reported", 0))

    def on_epoch_begin(self, epoch, logs=None):
        self._started = time.perf_counter()
        self._learning_rate = current_learning_rate(self.model.optimizer)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self._state.partial_epoch:
            return
        row: dict[str, float] = {}
        for key, value in logs.items():
            try:
                row[key] = float(value)
            except (TypeError, ValueError):
                logger.debug("dropping non-numeric log %s=%r", key, value)
        row["learning_rate"] = self._learning_rate
        row["seconds"] = time.perf_counter() - self._started
        self.epochs_reported += 1
        if not all(math.isfinite(v) for v in row.values()):
            logger.warning("epoch %d has non-finite metrics: %s", epoch + 1, row)
        call_reporter(self._reporter.epoch_end, epoch + 1, row, what=f"epoch_end({epoch + 1})")
