"""Validation split, normalisation (statistics from the training split only) and the tf.data pipeline."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from .types import TrainData

logger = logging.getLogger(__name__)

INPUT_METHODS = ("none", "standardize", "minmax")


@dataclass
class PreparedData:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray | None
    y_val: np.ndarray | None
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    normalization: dict[str, Any] | None


def _check_pair(x, y, name: str) -> None:
    if (x is None) != (y is None):
        raise ValueError(f"x_{name} and y_{name} must both be given or both be None")
    if x is not None and len(x) != len(y):
        raise ValueError(f"x_{name} has {len(x)} rows but y_{name} has {len(y)}")


def split_validation(
    x: np.ndarray, y: np.ndarray, fraction: float, seed: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Seed-shuffle the row indices and take the last ``fraction`` as validation.

    Each side keeps the original row order, so ``shuffle: false`` still trains in the order given.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation_split must be in (0, 1), got {fraction}")
    n = len(x)
    n_val = int(n * fraction)
    if n_val < 1 or n_val >= n:
        raise ValueError(f"validation_split {fraction} of {n} rows leaves an empty split")
    order = np.random.default_rng(seed).permutation(n)
    train_idx, val_idx = np.sort(order[: n - n_val]), np.sort(order[n - n_val:])
    return x[train_idx], y[train_idx], x[val_idx], y[val_idx]


class _Scaler:
    """Per-feature affine scaling fitted on one array: (a - shift) / scale, with scale 0 -> 1."""

    def __init__(self, method: str, reference: np.ndarray) -> None:
        if method not in ("standardize", "minmax"):
            raise ValueError(f"normalisation must be one of {INPUT_METHODS}, got {method!r}")
        self.method = method
        # float64 accumulators without a float64 copy of the whole array.
        if method == "standardize":
            self.shift = reference.mean(axis=0, dtype=np.float64)
            self.scale = reference.std(axis=0, dtype=np.float64)
        else:
            self.shift = reference.min(axis=0).astype(np.float64)
            self.scale = reference.max(axis=0).astype(np.float64) - self.shift
        self.scale = np.where(self.scale == 0, 1.0, self.scale)
        self._shift32 = self.shift.astype(np.float32)
        self._scale32 = self.scale.astype(np.float32)

    def apply(self, a: np.ndarray | None) -> np.ndarray | None:
        if a is None:
            return None
        return (np.asarray(a, dtype=np.float32) - self._shift32) / self._scale32

    def stats(self) -> dict[str, Any]:
        if self.method == "standardize":
            return {"method": "standardize", "mean": np.atleast_1d(self.shift).tolist(),
                    "std": np.atleast_1d(self.scale).tolist()}
        return {"method": "minmax", "min": np.atleast_1d(self.shift).tolist(),
                "range": np.atleast_1d(self.scale).tolist()}


def _inputs(a: np.ndarray | None, integer: bool) -> np.ndarray | None:
    if a is None:
        return None
    a = np.asarray(a)
    return a.astype(np.int32, copy=False) if integer else a.astype(np.float32, copy=False)


def _targets(a: np.ndarray | None) -> np.ndarray | None:
    if a is None:
        return None
    a = np.asarray(a)
    # Integer labels stay integers (sparse losses); anything else trains as float32.
    return a if np.issubdtype(a.dtype, np.integer) else a.astype(np.float32, copy=False)


def split_data(spec: dict, data: TrainData) -> TrainData:
    """The training, validation and test pairs as they will train, before normalisation: validation split
    off the training rows when the spec asks for it and the data set has no validation part."""
    dataset = spec.get("dataset") or {}
    seed = (spec.get("training") or {}).get("seed")
    x_train, y_train = np.asarray(data.x_train), np.asarray(data.y_train)
    _check_pair(x_train, y_train, "train")
    _check_pair(data.x_val, data.y_val, "val")
    _check_pair(data.x_test, data.y_test, "test")
    x_val, y_val = data.x_val, data.y_val
    fraction = float(dataset.get("validation_split") or 0.0)
    if x_val is None and fraction > 0:
        x_train, y_train, x_val, y_val = split_validation(x_train, y_train, fraction, seed)
    return TrainData(x_train, y_train, x_val, y_val, data.x_test, data.y_test)


def prepare_data(spec: dict, data: TrainData, *, integer_inputs: bool = False) -> PreparedData:
    """Split off validation if asked, then normalise every split with training-split statistics."""
    return normalize_splits(spec, split_data(spec, data), integer_inputs=integer_inputs)


def normalize_splits(spec: dict, splits: TrainData, *, integer_inputs: bool = False) -> PreparedData:
    """Normalise every split of ``split_data``'s result with training-split statistics.

    ``integer_inputs`` (an embedding first layer) keeps token ids as int32 and never normalises them.
    """
    dataset = spec.get("dataset") or {}
    x_train, y_train = splits.x_train, splits.y_train
    x_val, y_val, x_test, y_test = splits.x_val, splits.y_val, splits.x_test, splits.y_test

    method = dataset.get("normalize") or "none"
    if method not in INPUT_METHODS:
        raise ValueError(f"dataset.normalize must be one of {INPUT_METHODS}, got {method!r}")
    if integer_inputs and method != "none":
        logger.warning("inputs are token ids for an embedding; ignoring normalize=%r", method)
        method = "none"
    input_stats = None
    if method == "none":
        x_train, x_val, x_test = (_inputs(a, integer_inputs) for a in (x_train, x_val, x_test))
    else:
        scaler = _Scaler(method, x_train)
        x_train, x_val, x_test = (scaler.apply(a) for a in (x_train, x_val, x_test))
        input_stats = scaler.stats()

    target_method = dataset.get("normalize_targets") or "none"
    if target_method not in INPUT_METHODS:
        raise ValueError(f"dataset.normalize_targets must be one of {INPUT_METHODS}, got {target_method!r}")
    target_stats = None
    if target_method == "none":
        y_train, y_val, y_test = (_targets(a) for a in (y_train, y_val, y_test))
    else:
        scaler = _Scaler(target_method, np.asarray(y_train))
        y_train, y_val, y_test = (scaler.apply(None if a is None else np.asarray(a))
                                  for a in (y_train, y_val, y_test))
        target_stats = scaler.stats()

    normalization = None
    if input_stats is not None or target_stats is not None:
        normalization = {"inputs": input_stats, "targets": target_stats}
    return PreparedData(x_train, y_train, x_val, y_val, x_test, y_test, normalization)


def class_labels(y: np.ndarray) -> np.ndarray:
    """Each row's class index as Keras' ``class_weight`` reads it: the argmax of a one-hot row, else the
    label rounded to an integer."""
    y = np.asarray(y)
    if y.ndim > 1 and y.shape[-1] > 1:
        return np.argmax(y.reshape(len(y), -1), axis=-1)
    return np.rint(y.reshape(len(y))).astype(np.int64)


def balanced_class_weight(y: np.ndarray) -> dict[int, float]:
    """``training.class_weight: "balanced"``: scikit-learn's rule, n_samples / (n_classes * count) for
    each class present in the training targets (a class that never occurs gets no weight; Keras then
    weighs it 1). The weights average 1 over the training rows, so the loss keeps its scale."""
    from sklearn.utils.class_weight import compute_class_weight  # slow import; only jobs that ask pay it

    labels = class_labels(y)
    if labels.size and labels.min() < 0:
        raise ValueError(f"class labels must be >= 0 for class_weight, got {int(labels.min())}")
    classes = np.flatnonzero(np.bincount(labels))
    weights = compute_class_weight("balanced", classes=classes, y=labels)
    return {int(c): float(w) for c, w in zip(classes, weights)}


def make_dataset(x: np.ndarray, y: np.ndarray, batch_size: int) -> tf.data.Dataset:
    """Batches of (x, y) from in-memory arrays, in order, once: for validation, test and preflight."""
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size).prefetch(tf.data.AUTOTUNE)


def make_train_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, *, shuffle: bool, seed: int,
                       first_epoch: int = 0) -> tf.data.Dataset:
    """The training batches of every epoch from `first_epoch` (counted from 0) on, without end: fit takes
    `steps_per_epoch=ceil(len(x) / batch_size)` batches per epoch, the last batch of an epoch short.

    With `shuffle`, epoch e visits the rows in a permutation drawn from (seed, e) alone (a stateless
    shuffle), so an attempt resumed at epoch k trains on exactly the orders the uninterrupted run would
    have, whatever this process ran before. (A reshuffling buffer draws each epoch's order from how many
    times the data set was iterated, so a resumed run would start over at the first epoch's order.) Each
    batch is gathered from the in-memory arrays in one op: no per-row work, no shuffle buffer to fill.
    """
    n = len(x)
    features, targets = tf.convert_to_tensor(x), tf.convert_to_tensor(y)

    def epoch(e: tf.Tensor) -> tf.data.Dataset:
        order = tf.range(n, dtype=tf.int64)
        if shuffle:
            order = tf.random.experimental.stateless_shuffle(order, seed=tf.stack([tf.constant(seed, tf.int64), e]))
        return tf.data.Dataset.from_tensor_slices(order).batch(batch_size)

    batches = tf.data.Dataset.counter(first_epoch).flat_map(epoch)
    return batches.map(lambda rows: (tf.gather(features, rows), tf.gather(targets, rows))).prefetch(tf.data.AUTOTUNE)
