"""The one way trainer tests make a job spec: a raw client spec, validated by `trainyard.spec.validate_spec`.

The engine only ever receives what `validate_spec` returns, so tests give it exactly that: every default,
alias and resolved monitor mode comes from the contract, never from a hand-written copy of it. The data
set is an uploaded-style id whose `DatasetInfo` is derived from the test's own arrays with the heuristic an
upload goes through (`trainyard.datasets.summary.infer_task`), so shape, loss and monitor checks see what a
real upload of those arrays would give them.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np

from trainyard.datasets.summary import infer_task
from trainyard.spec import DatasetInfo, SpecLimits, validate_spec
from workers.trainer import TrainData

#: The id every test spec names: shaped like an uploaded data set's, resolved by `dataset_info`.
DATASET_ID = "ds_" + "0" * 32

# Sections merged one key deep with the base spec; every other override replaces the whole value.
_MERGED = ("dataset", "callbacks", "training", "limits", "diagnostics", "resources")


def dataset_info(data: TrainData | None = None, *, input_shape: tuple[int, ...] | None = None,
                 n_classes: int | None = None, target_shape: tuple[int, ...] = (),
                 train_samples: int = 64) -> DatasetInfo:
    """What validation would know of an upload of `data`; or, without arrays, a described data set
    (`n_classes` for class labels, else regression targets of `target_shape`)."""
    if data is not None:
        ys = [np.asarray(y) for y in (data.y_train, data.y_val, data.y_test) if y is not None]
        task, classes = infer_task(ys)
        return DatasetInfo(
            id=DATASET_ID, input_shape=tuple(int(d) for d in np.shape(data.x_train)[1:]), task=task,
            n_classes=classes, has_validation=data.x_val is not None, has_test=data.x_test is not None,
            target_shape=tuple(int(d) for d in ys[0].shape[1:]), train_samples=len(data.x_train),
            test_samples=0 if data.x_test is None else len(data.x_test))
    if input_shape is None:
        raise TypeError("dataset_info needs the arrays or an input_shape")
    return DatasetInfo(
        id=DATASET_ID, input_shape=tuple(input_shape), task="classification" if n_classes else "regression",
        n_classes=n_classes, has_validation=False, has_test=False, target_shape=tuple(target_shape),
        train_samples=train_samples)


def base_spec(info: DatasetInfo) -> dict[str, Any]:
    """The raw spec a client would send for a small model that fits `info`: one hidden layer, then an
    output layer and loss matching the targets; one epoch of batches of 16, seed 0, no validation split."""
    if info.task == "classification" and info.target_shape in ((), (1,)):
        head, loss, metrics = {"units": info.n_classes, "activation": "softmax"}, \
            "sparse_categorical_crossentropy", ["accuracy"]
    elif info.task == "classification":
        head, loss, metrics = {"units": info.n_classes, "activation": "softmax"}, \
            "categorical_crossentropy", ["accuracy"]
    else:
        head, loss, metrics = {"units": math.prod(info.target_shape) or 1}, "mse", []
    return {
        "name": "test",
        "dataset": {"id": DATASET_ID, "validation_split": 0.0},
        "model": {"input_shape": list(info.input_shape),
                  "layers": [{"type": "dense", "units": 8, "activation": "relu"}, {"type": "dense", **head}]},
        "loss": loss,
        "metrics": metrics,
        "training": {"epochs": 1, "batch_size": 16, "seed": 0},
    }


def raw_spec(data: TrainData | DatasetInfo, **overrides: Any) -> tuple[dict[str, Any], DatasetInfo]:
    """The raw client spec `make_spec` validates, and the data set it is validated against."""
    info = data if isinstance(data, DatasetInfo) else dataset_info(data)
    raw = base_spec(info)
    for key, value in copy.deepcopy(overrides).items():
        if key in _MERGED and isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key].update(value)
        elif key == "model" and isinstance(value, dict):
            raw["model"] = {"input_shape": list(info.input_shape), **value}
        else:
            raw[key] = value
    return raw, info


def make_spec(data: TrainData | DatasetInfo, *, spec_limits: SpecLimits | None = None,
              **overrides: Any) -> dict[str, Any]:
    """The normalised spec `validate_spec` makes of the base spec with `overrides`, for data like `data`.

    `dataset`, `callbacks`, `training`, `limits`, `diagnostics` and `resources` overrides merge into the
    base one key deep (`training={"epochs": 3}` keeps the batch size and seed); any other key replaces
    the base's value whole (`model` keeps the data's input shape unless it names one). A spec the contract
    refuses raises `SpecError`, as the API would answer 422. `spec_limits` stands for the operator's
    settings (default: the defaults).
    """
    raw, info = raw_spec(data, **overrides)
    return validate_spec(raw, datasets=lambda dataset_id: info if dataset_id == DATASET_ID else None,
                         limits=spec_limits or SpecLimits())
