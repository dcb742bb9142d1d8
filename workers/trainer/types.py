"""The trainer's contract types: input data, result, and the reporter interface (docs/design.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from trainyard.stop_reasons import StopReason


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
class ResumeState:
    """Where a new attempt picks up: the backup of the last completed epoch and the callbacks' state.

    ``backup_path`` is a ``.weights.h5`` file the engine wrote (model and optimizer variables,
    including the step counter and learning rate); ``epoch`` is the last completed epoch (from 1);
    ``state`` is what ``backup_saved`` reported with it. ``best_checkpoint_path``, when given, is the
    best checkpoint so far, so a resumed run can still evaluate it on the test split.
    ``diagnostics_history`` is what ``diagnostics`` reported for the epochs up to ``epoch`` (each
    ``{"epoch", "learning_rate", "loss", "val_loss", "variables"}``), so the findings rules of a resumed
    run judge the whole run (a plateau, overfitting, a loss that grew) and not only its own epochs.
    """

    backup_path: str
    epoch: int
    state: dict[str, Any]
    best_checkpoint_path: str | None = None
    diagnostics_history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class TrainResult:
    # A `StopReason` value; a reporter's should_stop() may return the requestable ones.
    stop_reason: str
    epochs_run: int
    monitor: str
    best_epoch: int | None
    best_value: float | None
    best_checkpoint: str | None
    test_metrics: dict[str, float] | None
    normalization: dict[str, Any] | None
    # Wall seconds per phase of this call: setup (data preparation, model build and compile), lr_range_test
    # (when asked for), preflight, fit, evaluate (test split or checkpoint check); phases not reached are absent.
    timings: dict[str, float] = field(default_factory=dict)
    # With stop_reason "error": what went wrong, for the user (`describe_error`): the exception's type and
    # its first line, never a traceback. With stop_reason "diagnosis": the finding's message.
    error: str | None = None
    # With stop_reason "diagnosis": the code of the finding that stopped the run (a job error code).
    error_code: str | None = None


def describe_error(exc: BaseException, limit: int = 300) -> str:
    """``"ValueError: <first line of the message>"``: names the cause in one line a user can read.

    TensorFlow often opens with a preamble ("Graph execution error:"); a first line ending in a colon is
    followed by the next non-empty line, which says what went wrong.
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    if text.endswith(":") and len(lines) > 1:
        text = f"{text} {lines[1]}"
    described = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return described if len(described) <= limit else described[: limit - 1] + "…"


@runtime_checkable
class Reporter(Protocol):
    def started(self, info: dict) -> None: ...

    def epoch_end(self, epoch: int, logs: dict) -> None: ...

    def checkpoint_saved(
        self, epoch: int, monitor: str, value: float, path: str, size: int, sha256: str
    ) -> None: ...

    def should_stop(self) -> str | None: ...

    def finished(self, result: TrainResult) -> None: ...

    def diagnostics(self, epoch: int, record: dict) -> None: ...
        # epoch from 1; record: {"learning_rate", "loss", "variables": [{"layer", "name", "grad_norm",
        #  "weight_norm", "update_norm", "update_ratio", "zero_grad_fraction"}]}

    def findings(self, items: list[dict]) -> None: ...
        # every finding so far (each {"code", "severity", "message", "evidence", "layer", "epoch",
        #  "suggested_change"}); one per (code, layer), so the receiver can upsert on that pair

    # Optional: reporters with ``backup_saved(epoch, path, state)`` get a resume backup after every
    # completed epoch (see ``ResumeState``); reporters without it cost no backup at all.
    # Optional: reporters with ``export_saved(format, epoch, path, size, sha256)`` get the final best
    # checkpoint's serving model (raw inputs, raw target units; workers/trainer/export.py) as a ``.tar.gz``
    # in each format ("savedmodel", "keras-serving", "onnx") before ``finished``, when the run ended well
    # (completed, early_stopping, max_runtime); reporters without it cost no export. Reporters with
    # ``model_card(facts)`` too answer the card each archive carries as ``card.json``, from ``facts``
    # (best, test_metrics, normalization, phases: what the trainer knows that is not recorded yet).


@dataclass
class InMemoryReporter:
    """Records every report in lists; for tests, benchmarks and warm-up.

    ``stop_after_batches=N`` simulates a cancel request: the N-th call to ``should_stop`` (made after the
    N-th training batch) and every later one return ``stop_reason``.
    """

    stop_after_batches: int | None = None
    stop_reason: str = StopReason.CANCELLED
    info: dict | None = None
    epochs: list[tuple[int, dict]] = field(default_factory=list)
    checkpoints: list[dict] = field(default_factory=list)
    result: TrainResult | None = None
    should_stop_calls: int = 0
    backups: list[tuple[int, str, dict]] = field(default_factory=list)
    diagnostics_records: list[tuple[int, dict]] = field(default_factory=list)
    # The latest findings by (code, layer), as a database reporter would hold them.
    findings_by_key: dict[tuple[str, str | None], dict] = field(default_factory=dict)

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

    def backup_saved(self, epoch: int, path: str, state: dict) -> None:
        self.backups.append((epoch, path, state))

    def diagnostics(self, epoch: int, record: dict) -> None:
        self.diagnostics_records.append((epoch, record))

    def findings(self, items: list[dict]) -> None:
        for item in items:
            self.findings_by_key[(item["code"], item.get("layer"))] = dict(item)

    @property
    def finding_codes(self) -> set[str]:
        return {code for code, _ in self.findings_by_key}

    def finished(self, result: TrainResult) -> None:
        self.result = result
