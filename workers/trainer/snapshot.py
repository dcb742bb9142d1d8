"""Train on a copy of the state: every variable a few trial steps touch, put back exactly afterwards.

Preflight and the learning-rate range test train the compiled model itself (so they trace, and the real
run reuses, the very train function ``fit`` uses) and then restore what they changed: every model
variable (weights, batch-norm statistics, the dropout layers' seed-generator states), every optimizer
variable (built here exactly as fit would build it: iteration counter, slots, loss scale, a constant
learning rate) and Keras' global seed generator if one exists. Neither draws from a global random
stream, so the real run starts from exactly the weights, optimizer state and random stream it would have
had without them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import keras
import numpy as np


def _global_seed_state() -> keras.Variable | None:
    # Only look: creating the global seed generator would itself draw from Python's random module.
    from keras.src.backend.common import global_state

    generator = global_state.get_global_attribute("global_seed_generator")
    return getattr(generator, "state", None)


class Snapshot:
    """The values of a model's and its optimizer's variables when the snapshot was taken."""

    def __init__(self, model: keras.Model) -> None:
        self.model = model
        optimizer = model.optimizer
        if not optimizer.built:  # as fit would: same variables, same initial values
            optimizer.build(model.trainable_variables)
        self._seed_state = _global_seed_state()
        self.model_values: list[np.ndarray] = [v.numpy() for v in model.variables]
        self._optimizer_values = [v.numpy() for v in optimizer.variables]
        self._seed_value = self._seed_state.numpy() if self._seed_state is not None else None

    def restore(self) -> None:
        model = self.model
        for v, value in zip(model.variables, self.model_values):
            v.assign(value)
        for v, value in zip(model.optimizer.variables, self._optimizer_values):
            v.assign(value)
        if self._seed_state is not None:
            self._seed_state.assign(self._seed_value)
        model.reset_metrics()


@contextmanager
def restored_afterwards(model: keras.Model) -> Iterator[Snapshot]:
    """Within the block, train ``model`` as you like; on leaving it (however), every variable is back."""
    snapshot = Snapshot(model)
    try:
        yield snapshot
    finally:
        snapshot.restore()
