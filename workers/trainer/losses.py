"""Losses and metrics from allow-listed names to explicit Keras objects.

The names and the Keras class behind each one come from the catalogue the spec validates against
(`trainyard.names`, standard library only), so the engine builds exactly what validation accepted.
Metric objects carry the user's name, so epoch logs use exactly the names in the spec
(``accuracy``, ``val_accuracy``), whatever Keras class implements them.
"""

from __future__ import annotations

import keras

import trainyard.names as names


def build_loss(name: str) -> keras.losses.Loss:
    canonical = names.canonical_loss(name)
    if canonical not in names.LOSS_KERAS_CLASSES:
        raise ValueError(f"unknown loss {name!r}; allowed: {sorted(names.LOSSES + list(names.LOSS_ALIASES))}")
    return getattr(keras.losses, names.LOSS_KERAS_CLASSES[canonical])()


def build_metric(name: str, loss: str) -> keras.metrics.Metric:
    if name not in names.METRICS:
        raise ValueError(f"unknown metric {name!r}; allowed: {sorted(names.METRICS)}")
    # "accuracy" means whatever matches the labels the loss expects (names.ACCURACY_KERAS_CLASSES).
    return getattr(keras.metrics, names.metric_keras_class(name, loss))(name=name)


def build_metrics(metric_names: list[str] | None, loss: str) -> list[keras.metrics.Metric]:
    metric_names = list(metric_names or [])
    if len(set(metric_names)) != len(metric_names):
        raise ValueError(f"metrics must be unique, got {metric_names}")
    if "loss" in metric_names:
        raise ValueError("'loss' is always reported; it is not a metric name")
    return [build_metric(name, loss) for name in metric_names]
