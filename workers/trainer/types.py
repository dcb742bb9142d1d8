"""The trainer's contract types: input data, result, and the reporter interface (docs/design.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

STOP_REASONS = ("completed", "early_stopping", "nan_loss", "cancelled", "max_runtime", "error")
# Reasons a reporter may return from should_stop().
REQUESTED_STOP_REASONS = ("cancelled", "max_runtime")


@dataclass
class TrainData:
    """In-memory numpy arrays; the validation and test pairs may be None."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray | None = None
    y_val: np.ndarray | None = None
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None


@dataclass
class TrainResult:
    stop_reason: str
    epochs_run: int
    monitor: str
    best_epoch: int | None
    best_value: float | None
    best_checkpoint: str | None
    test_metrics: dict[str, float] | None
    normalization: dict[str, Any] | None


@runtime_checkable
class Reporter(Protocol):
    def started(self, info: dict) -> None: ...

    def epoch_end(self, epoch: int, logs: dict) -> None: ...

    def checkpoint_saved(
        self, epoch: int, monitor: str, value: float, path: str, size: int, sha256: str
    ) -> None: ...

    def should_stop(self) -> str | None: ...

    def finished(self, result: TrainResult) -> None: ...


@dataclass
class InMemoryReporter:
    """Records every report in lists; for tests, benchmarks and warm-up.

    ``stop_after_batches=N`` simulates a cancel request: the N-th call to ``should_stop`` (made after the
    N-th training batch) and every later one return ``stop_reason``.
    """

    stop_after_batches: int | None = None
    stop_reason: str = "cancelled"
    info: dict | None = None
    epochs: list[tuple[int, dict]] = field(default_factory=list)
    checkpoints: list[dict] = field(default_factory=list)
    result: TrainResult | None = None
    should_stop_calls: int = 0

    def started(self, info: dict) -> None:
        self.info = info

    def epoch_end(self, epoch: int, logs: dict) -> None:
        self.epochs.append((epoch, dict(logs)))

    def checkpoint_saved(
        self, epoch: int, monitor: str, value: float, path: str, size: int, sha256: str
    ) -> None:
        self.checkpoints.append(
            {"epoch": epoch, "monitor": monitor, "value": value, "path": path, "size": size,
             "sha256": sha256}
        )

    def should_stop(self) -> str | None:
        self.should_stop_calls += 1
        if self.stop_after_batches is not None and self.should_stop_calls >= self.stop_after_batches:
            return self.stop_reason
        return None

    def finished(self, result: TrainResult) -> None:
        self.result = result
