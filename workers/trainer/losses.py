"""Losses and metrics from allow-listed names to explicit Keras objects.

Metric objects carry the user's name, so epoch logs use exactly the names in the spec
(``accuracy``, ``val_accuracy``), whatever Keras class implements them.
"""

from __future__ import annotations

from typing import Callable

import keras

_LOSSES: dict[str, Callable[[], keras.losses.Loss]] = {
    "mse": keras.losses.MeanSquaredError,
    "mean_squared_error": keras.losses.MeanSquaredError,
    "mae": keras.losses.MeanAbsoluteError,
    "mean_absolute_error": keras.losses.MeanAbsoluteError,
    "mape": keras.losses.MeanAbsolutePercentageError,
    "mean_absolute_percentage_error": keras.losses.MeanAbsolutePercentageError,
    "msle": keras.losses.MeanSquaredLogarithmicError,
    "mean_squared_logarithmic_error": keras.losses.MeanSquaredLogarithmicError,
    "huber": keras.losses.Huber,
    "log_cosh": keras.losses.LogCosh,
    "binary_crossentropy": keras.losses.BinaryCrossentropy,
    "categorical_crossentropy": keras.losses.CategoricalCrossentropy,
    "sparse_categorical_crossentropy": keras.losses.SparseCategoricalCrossentropy,
    "kl_divergence": keras.losses.KLDivergence,
    "poisson": keras.losses.Poisson,
    "hinge": keras.losses.Hinge,
    "squared_hinge": keras.losses.SquaredHinge,
    "categorical_hinge": keras.losses.CategoricalHinge,
}
LOSS_NAMES = tuple(_LOSSES)

_CATEGORICAL_LOSSES = {"categorical_crossentropy", "categorical_hinge", "kl_divergence"}
_SPARSE_LOSSES = {"sparse_categorical_crossentropy"}

_METRICS: dict[str, Callable[..., keras.metrics.Metric]] = {
    "binary_accuracy": keras.metrics.BinaryAccuracy,
    "categorical_accuracy": keras.metrics.CategoricalAccuracy,
    "sparse_categorical_accuracy": keras.metrics.SparseCategoricalAccuracy,
    "top_k_categorical_accuracy": keras.metrics.TopKCategoricalAccuracy,
    "sparse_top_k_categorical_accuracy": keras.metrics.SparseTopKCategoricalAccuracy,
    "auc": keras.metrics.AUC,
    "precision": keras.metrics.Precision,
    "recall": keras.metrics.Recall,
    "mae": keras.metrics.MeanAbsoluteError,
    "mean_absolute_error": keras.metrics.MeanAbsoluteError,
    "mse": keras.metrics.MeanSquaredError,
    "mean_squared_error": keras.metrics.MeanSquaredError,
    "mape": keras.metrics.MeanAbsolutePercentageError,
    "mean_absolute_percentage_error": keras.metrics.MeanAbsolutePercentageError,
    "msle": keras.metrics.MeanSquaredLogarithmicError,
    "rmse": keras.metrics.RootMeanSquaredError,
    "root_mean_squared_error": keras.metrics.RootMeanSquaredError,
}
METRIC_NAMES = ("accuracy",) + tuple(_METRICS)


def build_loss(name: str) -> keras.losses.Loss:
    if name not in _LOSSES:
        raise ValueError(f"unknown loss {name!r}; allowed: {sorted(_LOSSES)}")
    return _LOSSES[name]()


def _accuracy_class(loss: str) -> Callable[..., keras.metrics.Metric]:
    # "accuracy" means whatever matches the labels the loss expects, as the spec's contract resolves it
    # (trainyard.spec.names.metric_keras_class): with any other loss (mse on one-hot class targets, which
    # validation accepts) the outputs are scored one by one, as binary accuracy.
    if loss in _SPARSE_LOSSES:
        return keras.metrics.SparseCategoricalAccuracy
    if loss in _CATEGORICAL_LOSSES:
        return keras.metrics.CategoricalAccuracy
    return keras.metrics.BinaryAccuracy


def build_metric(name: str, loss: str) -> keras.metrics.Metric:
    if name == "accuracy":
        return _accuracy_class(loss)(name=name)
    if name not in _METRICS:
        raise ValueError(f"unknown metric {name!r}; allowed: {sorted(METRIC_NAMES)}")
    return _METRICS[name](name=name)


def build_metrics(names: list[str] | None, loss: str) -> list[keras.metrics.Metric]:
    names = list(names or [])
    if len(set(names)) != len(names):
        raise ValueError(f"metrics must be unique, got {names}")
    if "loss" in names:
        raise ValueError("'loss' is always reported; it is not a metric name")
    return [build_metric(name, loss) for name in names]
