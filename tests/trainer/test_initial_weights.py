"""A fork starts from its parent's weights (`train(..., initial_weights=...)`): the best `.keras` checkpoint
or the last `.weights.h5` backup, with a fresh optimizer (step count and moments from zero)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

from trainyard.spec.validate import validate_spec
from workers.trainer import InMemoryReporter, TrainData, train


def _spec(epochs: int, learning_rate: float, seed: int = 1) -> dict[str, Any]:
    return validate_spec({
        "dataset": {"id": "builtin:iris", "validation_split": 0.25, "normalize": "standardize"},
        "model": {"input_shape": [4], "layers": [{"type": "dense", "units": 8, "activation": "relu"},
                                                  {"type": "dense", "units": 3, "activation": "softmax"}]},
        "loss": "sparse_categorical_crossentropy",
        "metrics": ["accuracy"],
        "optimizer": {"type": "adam", "learning_rate": learning_rate},
        "training": {"epochs": epochs, "batch_size": 16, "seed": seed},
        "diagnostics": {"on_error": "continue"},
    })


@pytest.fixture(scope="module")
def parent(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Three epochs of Adam: a best checkpoint and a backup (with Adam's state at step 3 x 5)."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(96, 4)).astype(np.float32)
    data = TrainData(x, (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.3).astype(np.int64))
    workdir = tmp_path_factory.mktemp("parent")
    reporter = InMemoryReporter()
    result = train(_spec(3, 0.05), data, reporter, workdir)
    return {"data": data, "best": Path(result.best_checkpoint), "backup": Path(reporter.backups[-1][1])}


def _weights(path: Path) -> list[np.ndarray]:
    return keras.models.load_model(path, compile=False, safe_mode=True).get_weights()


def _child(parent: dict[str, Any], tmp_path: Path, initial: Path | None) -> tuple[Any, keras.Model]:
    # A rate too small to move anything: the child's checkpoint holds the weights it started from.
    result = train(_spec(1, 1e-10, seed=2), parent["data"], InMemoryReporter(), tmp_path, initial_weights=initial)
    return result, keras.models.load_model(result.best_checkpoint, safe_mode=True)


@pytest.mark.parametrize("source", ["best", "backup"])
def test_a_fork_starts_from_the_parents_weights_with_a_fresh_optimizer(parent: dict[str, Any], tmp_path: Path,
                                                                       source: str) -> None:
    result, child = _child(parent, tmp_path, parent[source])
    expected = _weights(parent["best"]) if source == "best" else None
    if expected is None:  # the backup is of the last epoch: its layers' weights, read without its optimizer
        model = keras.models.load_model(parent["best"], compile=False, safe_mode=True)
        model.load_weights(parent["backup"])
        expected = model.get_weights()
    for got, want in zip(child.get_weights(), expected, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6)
    # 72 training rows, batch 16: 5 steps in the child's one epoch; the parent's 15 steps are not carried over.
    assert int(child.optimizer.iterations.numpy()) == 5
    assert result.stop_reason == "completed"


def test_without_initial_weights_the_child_starts_from_its_own_initialisation(parent: dict[str, Any],
                                                                              tmp_path: Path) -> None:
    _, child = _child(parent, tmp_path, None)
    assert not all(np.allclose(a, b, atol=1e-3) for a, b in zip(child.get_weights(), _weights(parent["best"])))
