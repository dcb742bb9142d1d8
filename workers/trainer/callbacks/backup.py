"""Back up the run after every completed epoch, and restore a backup when a new attempt resumes.

Like ``keras.callbacks.BackupAndRestore``, but the backup leaves the process through the reporter (a
worker that dies loses its disk) and carries the other callbacks' state, so a resumed run keeps its
best-checkpoint threshold, early-stopping patience and plateau counters. It also carries the state of
every random seed generator in the model (dropout masks), which ``save_weights`` leaves out: a resumed run
draws the masks the uninterrupted run would have drawn, not the first epoch's again.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import keras

from ..types import ResumeState
from .state import RunState, call_reporter

logger = logging.getLogger(__name__)

BACKUP_NAME = "backup.weights.h5"


def save_weights_atomically(model: keras.Model, path: Path) -> None:
    """``model.save_weights`` (layers and optimizer variables) via a temp file and a rename."""
    tmp = path.parent / f".{os.getpid()}.tmp.{path.name}"
    try:
        model.save_weights(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def seed_generator_states(model: keras.Model) -> list[keras.Variable]:
    """The state of every ``SeedGenerator`` in the model (dropout, recurrent dropout), in model order:
    ``model.variables`` less its weights."""
    weights = {id(v) for v in model.weights}
    return [v for v in model.variables if id(v) not in weights]


class EpochBackup(keras.callbacks.Callback):
    """After each complete epoch: write ``directory/backup.weights.h5``, then call
    ``reporter.backup_saved(epoch, path, state)`` with epochs counted from 1.

    ``stateful`` maps a name to a callback (or None) with ``get_state()``; their states go
    into ``state["callbacks"]``. Put this callback last, so the state it records is the one after every
    other callback has seen the epoch. ``resume`` restores model and optimizer variables at the start of
    training, with the seed generators' states (the callbacks' state is restored by the engine, before
    ``fit``).
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        reporter,
        state: RunState,
        stateful: dict,
        *,
        elapsed_before: float = 0.0,
        resume: ResumeState | None = None,
        carry: dict | None = None,
    ) -> None:
        super().__init__()
        if not callable(getattr(reporter, "backup_saved", None)):
            raise TypeError("reporter must have a backup_saved(epoch, path, state) method")
        if not isinstance(state, RunState):
            raise TypeError("state must be a RunState")
        stateful = {name: cb for name, cb in stateful.items() if cb is not None}
        for name, callback in stateful.items():
            if not callable(getattr(callback, "get_state", None)):
                raise TypeError(f"stateful callback {name!r} has no get_state()")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / BACKUP_NAME
        self._reporter = reporter
        self._state = state
        self._stateful = dict(stateful)
        self._elapsed_before = float(elapsed_before)
        self._resume = resume
        # Facts of the run fixed before training (the range test's record): saved with every backup.
        self._carry = dict(carry or {})
        self._began = time.monotonic()

    def on_train_begin(self, logs=None):
        self._began = time.monotonic()
        if self._resume is None:
            return
        # Optimizer variables exist only once it is built; loading into an unbuilt optimizer would
        # silently skip them (and restart Adam's moments and the step counter).
        self.model.optimizer.build(self.model.trainable_variables)
        self.model.load_weights(self._resume.backup_path)
        seeds = self._resume.state.get("seed_generators")
        generators = seed_generator_states(self.model)
        if seeds is not None and len(seeds) == len(generators):
            for variable, value in zip(generators, seeds):
                variable.assign(value)
        elif generators:
            # A backup from before seed states were kept: the run goes on, with masks drawn anew.
            logger.warning("the backup holds no dropout seed states; the resumed run draws its masks anew")
        logger.info("restored model and optimizer from %s (step %d)", self._resume.backup_path,
                    int(self.model.optimizer.iterations.numpy()))

    def on_epoch_end(self, epoch, logs=None):
        if self._state.partial_epoch:
            return
        save_weights_atomically(self.model, self.path)
        state = {
            "epoch": epoch + 1,
            "elapsed_seconds": self._elapsed_before + time.monotonic() - self._began,
            "stop_training": bool(self.model.stop_training),
            "callbacks": {name: cb.get_state() for name, cb in self._stateful.items()},
            "seed_generators": [v.numpy().tolist() for v in seed_generator_states(self.model)],
            **self._carry,
        }
        call_reporter(self._reporter.backup_saved, epoch + 1, str(self.path), state,
                      what=f"backup_saved({epoch + 1})")
