"""A stop in the middle of an epoch does not wait for a full validation pass: that epoch is never reported."""
import keras
import numpy as np

from workers.trainer.callbacks import RunState, StopRequest


class _CountTestBatches(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.batches = 0

    def on_test_batch_end(self, batch, logs=None):
        self.batches += 1


def _fit(stop_after_calls: int) -> tuple[RunState, _CountTestBatches]:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 4)).astype("float32"), rng.normal(size=(64, 1)).astype("float32")
    x_val, y_val = rng.normal(size=(400, 4)).astype("float32"), rng.normal(size=(400, 1)).astype("float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    calls = []

    def should_stop() -> str | None:
        calls.append(1)
        return "cancelled" if len(calls) >= stop_after_calls else None

    state, counter = RunState(), _CountTestBatches()
    model.fit(x, y, batch_size=8, epochs=2, validation_data=(x_val, y_val), validation_batch_size=8, verbose=0,
              callbacks=[StopRequest(should_stop, state), counter])
    return state, counter


def test_a_cut_short_epoch_validates_one_batch_not_fifty():
    state, counter = _fit(stop_after_calls=3)  # batch 3 of 8 in epoch 1
    assert (state.stop_reason, state.partial_epoch) == ("cancelled", True)
    assert counter.batches == 1


def test_a_complete_epoch_validates_in_full():
    state, counter = _fit(stop_after_calls=8)  # the last batch of epoch 1: that epoch is complete
    assert (state.stop_reason, state.partial_epoch) == ("cancelled", False)
    assert counter.batches == 50
