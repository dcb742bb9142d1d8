"""Reduce the learning rate on a plateau: Keras' own callback, fed only complete epochs."""

from __future__ import annotations

import keras

from .state import RestoresCounters, RunState, json_float

_MODES = ("auto", "min", "max")


class ReduceLROnPlateau(RestoresCounters, keras.callbacks.ReduceLROnPlateau):
    """``keras.callbacks.ReduceLROnPlateau`` with the spec's arguments, validated up front.

    Only valid with a constant learning rate: a schedule owns the rate, so the engine refuses the
    combination before building this.
    """

    def __init__(
        self,
        state: RunState,
        *,
        monitor: str = "val_loss",
        factor: float = 0.1,
        patience: int = 10,
        min_delta: float = 1e-4,
        cooldown: int = 0,
        min_lr: float = 0.0,
        mode: str = "auto",
    ) -> None:
        if not isinstance(state, RunState):
            raise TypeError("state must be a RunState")
        if not monitor or not isinstance(monitor, str):
            raise ValueError(f"monitor must be a non-empty string, got {monitor!r}")
        if not 0.0 < factor < 1.0:
            raise ValueError(f"factor must be in (0, 1), got {factor!r}")
        if not isinstance(patience, int) or patience < 0:
            raise ValueError(f"patience must be an int >= 0, got {patience!r}")
        if not isinstance(cooldown, int) or cooldown < 0:
            raise ValueError(f"cooldown must be an int >= 0, got {cooldown!r}")
        if min_delta < 0 or min_lr < 0:
            raise ValueError("min_delta and min_lr must be >= 0")
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        # The spec stores the mode it resolved ("max" for val_auc, which Keras' own "auto" takes for a
        # loss): Keras gets that mode, never its guess.
        super().__init__(monitor=monitor, factor=factor, patience=patience, min_delta=min_delta,
                         cooldown=cooldown, min_lr=min_lr, mode=mode, verbose=0)
        self._state = state

    def get_state(self) -> dict:
        # The reduced rate itself is an optimizer variable, restored with the backup's weights.
        return {"wait": int(self.wait), "best": json_float(self.best),
                "cooldown_counter": int(self.cooldown_counter)}

    def apply_state(self, state: dict) -> None:
        self.wait = int(state.get("wait", 0))
        if state.get("best") is not None:
            self.best = float(state["best"])
        self.cooldown_counter = int(state.get("cooldown_counter", 0))

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self._state.partial_epoch:
            return
        super().on_epoch_end(epoch, logs)
