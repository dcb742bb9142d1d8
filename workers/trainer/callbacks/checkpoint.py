"""Save the model whenever the monitored value improves, atomically, and report the file."""

from __future__ import annotations

import hashlib
import logging
import math
import os
from pathlib import Path

import keras

from trainyard.names import monitor_mode

from .state import RunState, call_reporter

logger = logging.getLogger(__name__)


def resolve_mode(monitor: str, mode: str) -> str:
    if mode in ("min", "max"):
        return mode
    if mode != "auto":
        raise ValueError(f"mode must be 'min', 'max' or 'auto', got {mode!r}")
    # The spec resolves "auto" before the trainer sees it; this answers the same for direct callers.
    return monitor_mode(monitor)


def save_atomically(model: keras.Model, path: Path) -> tuple[int, str]:
    """Write ``model`` to ``path`` via a temp file in the same directory; return (size, sha256).

    Readers either see the previous state or the complete file, never a half-written one.
    """
    directory = path.parent
    # Keras insists on the .keras suffix, so the temp name keeps it.
    tmp = directory / f".{path.stem}.{os.getpid()}.tmp.keras"
    try:
        model.save(tmp)
        with open(tmp, "rb") as fh:
            digest = hashlib.file_digest(fh, "sha256")
            size = os.fstat(fh.fileno()).st_size
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)
    return size, digest.hexdigest()


class BestCheckpoint(keras.callbacks.Callback):
    """Writes ``directory/epoch-NNNN.keras`` (epoch from 1) when ``monitor`` improves strictly.

    Earlier checkpoints stay on disk; the reporter has been told about each. Epochs cut short by a
    stop request or a NaN loss are skipped, as are non-finite monitored values.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        monitor: str,
        mode: str,
        reporter,
        state: RunState,
    ) -> None:
        super().__init__()
        if not monitor or not isinstance(monitor, str):
            raise ValueError(f"monitor must be a non-empty string, got {monitor!r}")
        if not callable(getattr(reporter, "checkpoint_saved", None)):
            raise TypeError("reporter must have a checkpoint_saved(...) method")
        if not isinstance(state, RunState):
            raise TypeError("state must be a RunState")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.monitor = monitor
        self.mode = resolve_mode(monitor, mode)
        self._reporter = reporter
        self._state = state
        self._warned_missing = False
        self.best_epoch: int | None = None
        self.best_value: float | None = None
        self.best_path: Path | None = None

    def get_state(self) -> dict:
        return {"best_epoch": self.best_epoch, "best_value": self.best_value}

    def set_state(self, state: dict, best_path: str | os.PathLike | None = None) -> None:
        """Continue from an earlier attempt: only a strictly better value replaces its best."""
        if state.get("best_value") is not None:
            self.best_epoch, self.best_value = int(state["best_epoch"]), float(state["best_value"])
            self.best_path = Path(best_path) if best_path else None

    def _improves(self, value: float) -> bool:
        if self.best_value is None:
            return True
        return value < self.best_value if self.mode == "min" else value > self.best_value

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self._state.partial_epoch:
            return
        value = logs.get(self.monitor)
        if value is None:
            if not self._warned_missing:
                logger.warning("checkpoint monitor %r not in logs %s; no checkpoint saved",
                               self.monitor, sorted(logs))
                self._warned_missing = True
            return
        value = float(value)
        if not math.isfinite(value) or not self._improves(value):
            return
        number = epoch + 1
        path = self.directory / f"epoch-{number:04d}.keras"
        size, sha256 = save_atomically(self.model, path)
        self.best_epoch, self.best_value, self.best_path = number, value, path
        call_reporter(self._reporter.checkpoint_saved, number, self.monitor, value, str(path), size,
                      sha256, what=f"checkpoint_saved({number})")
