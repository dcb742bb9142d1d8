"""A resumed run is the run it continues: with shuffling and dropout, training N epochs in one go and training
k epochs, then resuming from the backup to N, give the same per-epoch metrics, bit for bit (same machine,
same process settings: a seeded job turns on TensorFlow's op determinism). The shuffle order of an epoch and
the dropout masks follow from the seed and the backup, not from how many epochs this process has run."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from trainyard.spec.validate import validate_spec
from workers.trainer import InMemoryReporter, TrainData, train
from workers.trainer.types import ResumeState

EPOCHS = 6


def _spec(**training: Any) -> dict[str, Any]:
    return validate_spec({
        "name": "exact-resume",
        "dataset": {"id": "builtin:iris", "validation_split": 0.25, "normalize": "standardize"},
        "model": {"input_shape": [4], "layers": [{"type": "dense", "units": 16, "activation": "relu"},
                                                  {"type": "dropout", "rate": 0.3},
                                                  {"type": "dense", "units": 16, "activation": "relu"},
                                                  {"type": "dropout", "rate": 0.3},
                                                  {"type": "dense", "units": 3, "activation": "softmax"}]},
        "loss": "sparse_categorical_crossentropy",
        "metrics": ["accuracy"],
        "optimizer": {"type": "adam", "learning_rate": 0.01},
        "training": {"epochs": EPOCHS, "batch_size": 8, "seed": 11, "shuffle": True, **training},
    })


@pytest.fixture(scope="module")
def data() -> TrainData:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(96, 4)).astype(np.float32)
    y = ((x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.3).astype(np.int64))
    return TrainData(x, y)


@pytest.fixture(scope="module")
def whole(data: TrainData, tmp_path_factory: pytest.TempPathFactory) -> InMemoryReporter:
    """The uninterrupted run, trained once for the module: every test here compares with the same one."""
    reporter = InMemoryReporter()
    train(_spec(), data, reporter, tmp_path_factory.mktemp("whole"))
    return reporter


class _InterruptAfter(InMemoryReporter):
    """A worker that is stopped (SIGTERM) right after epoch `epoch` was backed up."""

    def __init__(self, epoch: int) -> None:
        super().__init__()
        self._epoch = epoch

    def should_stop(self) -> str | None:
        return "interrupted" if any(e == self._epoch for e, _, _ in self.backups) else None


def _curves(reporter: InMemoryReporter) -> dict[int, dict[str, float]]:
    # `seconds` is wall time; everything else an epoch reports must match.
    return {epoch: {k: v for k, v in logs.items() if k != "seconds"} for epoch, logs in reporter.epochs}


def _resumed(spec: dict[str, Any], data: TrainData, tmp_path: Path, stop_after: int) -> dict[int, dict[str, float]]:
    first = _InterruptAfter(stop_after)
    assert train(spec, data, first, tmp_path / "first").stop_reason == "interrupted"
    epoch, path, state = first.backups[-1]
    assert epoch == stop_after
    copy = tmp_path / "backup.weights.h5"  # the dead worker's disk is gone; the store kept a copy
    shutil.copy(path, copy)
    second = InMemoryReporter()
    result = train(spec, data, second, tmp_path / "second", resume=ResumeState(str(copy), epoch, state))
    assert result.stop_reason == "completed"
    return {**_curves(first), **_curves(second)}


@pytest.mark.parametrize("stop_after", [1, 3])
def test_resumed_run_has_the_metrics_of_the_uninterrupted_run(tmp_path: Path, data: TrainData,
                                                              whole: InMemoryReporter, stop_after: int) -> None:
    spec = _spec()
    expected = _curves(whole)
    assert list(expected) == list(range(1, EPOCHS + 1))
    assert _resumed(spec, data, tmp_path / "resumed", stop_after) == expected


def test_epochs_see_different_orders_and_masks(whole: InMemoryReporter) -> None:
    """The equality above is not that of a run that repeats itself: every epoch trains differently."""
    losses = [logs["loss"] for _, logs in whole.epochs]
    assert len(set(losses)) == len(losses)
