"""Stop as soon as the running training loss is NaN or infinite."""

from __future__ import annotations

import math

import keras

from trainyard.stop_reasons import StopReason

from .state import RunState


class TerminateOnNaN(keras.callbacks.Callback):
    """Like ``keras.callbacks.TerminateOnNaN`` but records ``nan_loss`` as the stop reason.

    The epoch in which the loss diverged is marked partial, so it is neither reported (its metrics are
    not finite, hence not JSON) nor checkpointed.
    """

    def __init__(self, state: RunState) -> None:
        super().__init__()
        if not isinstance(state, RunState):
            raise TypeError("state must be a RunState")
        self._state = state

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        loss = logs.get("loss")
        if loss is None:
            return
        if not math.isfinite(float(loss)):
            self._state.request_stop(StopReason.NAN_LOSS, partial=True)
            self.model.stop_training = True
