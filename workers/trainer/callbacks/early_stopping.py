"""Early stopping: Keras' own callback, fed only complete epochs."""

from __future__ import annotations

import keras

from .state import RestoresCounters, RunState, json_float

_MODES = ("auto", "min", "max")


class EarlyStopping(RestoresCounters, keras.callbacks.EarlyStopping):
    """``keras.callbacks.EarlyStopping`` with the spec's arguments, validated up front.

    ``triggered`` tells the engine whether this callback (rather than a NaN or a stop request) ended
    training.
    """

    def __init__(
        self,
        state: RunState,
        *,
        monitor: str = "val_loss",
        patience: int = 0,
        min_delta: float = 0.0,
        mode: str = "auto",
        restore_best_weights: bool = False,
        start_from_epoch: int = 0,
    ) -> None:
        if not isinstance(state, RunState):
            raise TypeError("state must be a RunState")
        if not monitor or not isinstance(monitor, str):
            raise ValueError(f"monitor must be a non-empty string, got {monitor!r}")
        if not isinstance(patience, int) or patience < 0:
            raise ValueError(f"patience must be an int >= 0, got {patience!r}")
        if min_delta < 0:
            raise ValueError(f"min_delta must be >= 0, got {min_delta!r}")
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        if not isinstance(start_from_epoch, int) or start_from_epoch < 0:
            raise ValueError(f"start_from_epoch must be an int >= 0, got {start_from_epoch!r}")
        super().__init__(
            monitor=monitor,
            patience=patience,
            min_delta=min_delta,
            mode=mode,
            restore_best_weights=bool(restore_best_weights),
            start_from_epoch=start_from_epoch,
            verbose=0,
        )
        self._state = state

    def get_state(self) -> dict:
        """What a resumed run needs to keep counting patience where this one stopped."""
        return {"wait": int(self.wait), "best": json_float(self.best), "best_epoch": int(self.best_epoch),
                "stopped_epoch": int(self.stopped_epoch)}

    def apply_state(self, state: dict) -> None:
        self.wait = int(state.get("wait", 0))
        self.best = state.get("best")
        self.best_epoch = int(state.get("best_epoch", 0))
        self.stopped_epoch = int(state.get("stopped_epoch", 0))

    @property
    def triggered(self) -> bool:
        return self.stopped_epoch > 0

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self._state.partial_epoch:
            return
        super().on_epoch_end(epoch, logs)
