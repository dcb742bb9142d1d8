"""Checks of a job's data before training, each a finding with its evidence: rows shared between the
training split and the validation or test split (``data_leakage``), constant features
(``constant_feature``), features that hold NaN, infinity or values float32 cannot hold
(``non_finite_feature``), severe class imbalance (``class_imbalance``) and regression targets the final
activation cannot produce (``label_out_of_range``).

Where they look:

- the features on the splits as they will train, after the validation split and before normalisation
  (``measure_features``, called by the engine between ``split_data`` and ``normalize_splits``, so the
  raw splits need not be kept). Normalisation keeps identical rows identical and constant features
  constant, so nothing is lost; it would hide nothing either, except that a feature beyond float32's
  range only turns infinite when cast.
- the targets as the loss sees them (after ``normalize_targets``): that is what the output layer has to
  produce.

What they leave to others: uploads refuse NaN and infinity in every array (``trainyard/datasets``: at
upload and again when the worker loads the file), and a float32 or narrower value cannot exceed float32's
range, so ``non_finite_feature`` scans only floats wider than float32: values finite in float64 but beyond
float32's range (they become infinite in training) are the one way a non-finite feature reaches a job
through the service, and the same pass catches NaN and infinity there. (NaN in float32 arrays a caller of
``train`` brings itself still ends the run with ``nan_loss``, in preflight or at the batch that meets it.)
Class labels outside the output layer (a sparse label >= its units, negative labels, binary labels other
than 0 and 1) are refused at submission against the data set's summary
(``trainyard.spec.checks.check_loss``), so only regression targets are checked here.

Cost: every row counts (a sample alone cannot prove a feature constant or a row unshared), in a few
vectorised passes at most, each in blocks of ``KEY_BLOCK_BYTES``: constant columns are proposed by an
evenly spaced sample of ``CONSTANT_SAMPLE_ROWS`` rows and confirmed over every row for the candidates
only; wide floats get one pass of per-feature largest magnitudes; shared rows a 32-bit position-weighted
key per row (an integer dot product of the row's bytes) whose matches are confirmed by a BLAKE2b digest of
the candidate rows only; labels one ``bincount``. Extra memory is a few bytes per row and per feature.
bench/diagnostics.py times them (bench/README.md has the figure).
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np

from trainyard.names import CLASSIFICATION_LOSSES, REGRESSION_LOSSES, canonical_loss

from ..data import class_labels
from ..types import TrainData
from .findings import RunContext, _final_activation, _g, finding

# The largest finite float32: features beyond it become infinite when the model reads them.
FLOAT32_MAX = float(np.finfo(np.float32).max)
# Rows hashed per block when computing row keys (bounds the temporary of a uint8 -> uint32 promotion).
KEY_BLOCK_BYTES = 8 << 20
# Shared rows up to this fraction of a split are an info finding (coincidences in coarse data, e.g. iris
# measured to a millimetre); from it on a warning.
LEAKAGE_WARNING_FRACTION = 0.01
# Largest class count over smallest (present) class count from which the imbalance is severe.
IMBALANCE_RATIO = 10.0
# Rows of the evenly spaced sample that proposes constant columns (every row then confirms them).
CONSTANT_SAMPLE_ROWS = 2_048
# Feature indices and class counts listed in evidence, at most.
LISTED = 50
# What the final activation can output, for the regression-target check (closed: a target at a bound is
# reachable closely enough).
OUTPUT_RANGES: dict[str, tuple[float, float]] = {
    "sigmoid": (0.0, 1.0), "hard_sigmoid": (0.0, 1.0), "tanh": (-1.0, 1.0), "softsign": (-1.0, 1.0),
    "relu": (0.0, math.inf), "relu6": (0.0, 6.0), "softplus": (0.0, math.inf),
    "exponential": (0.0, math.inf), "elu": (-1.0, math.inf), "selu": (-1.7580993408473766, math.inf),
}
SPLIT_NAMES = {"val": "validation", "test": "test"}


# --- measuring ---------------------------------------------------------------------------------------


def _rows(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    return a.reshape(len(a), -1)


def _row_keys(rows: np.ndarray) -> np.ndarray:
    """A 32-bit key per row: the row's bytes as 32-bit words (bytes when the row length is not a multiple
    of 4) dotted with fixed odd weights, modulo 2**32. Integer arithmetic, so identical rows get identical
    keys wherever they sit; different rows rarely do, and every match is confirmed by digest."""
    n, width = rows.shape
    row_bytes = rows.dtype.itemsize * width
    word = np.uint32 if row_bytes % 4 == 0 else np.uint8
    words = row_bytes // np.dtype(word).itemsize
    weights = (np.random.default_rng(0).integers(0, 2**32, size=words, dtype=np.uint64) | 1).astype(np.uint32)
    keys = np.empty(n, dtype=np.uint32)
    step = max(1, KEY_BLOCK_BYTES // max(row_bytes, 1))
    for start in range(0, n, step):
        block = np.ascontiguousarray(rows[start:start + step]).view(word).reshape(-1, words)
        keys[start:start + step] = block @ weights  # uint32 arithmetic wraps: the key is modulo 2**32
    return keys


def _digest(row: np.ndarray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(row).tobytes(), digest_size=16).digest()


def shared_rows(train: np.ndarray, other: np.ndarray, train_keys: np.ndarray | None = None) -> int:
    """How many rows of ``other`` are byte-identical to some row of ``train`` (compared in ``train``'s
    dtype, the one both train in)."""
    t, o = _rows(train), _rows(other)
    if o.dtype != t.dtype:
        with np.errstate(over="ignore", invalid="ignore"):  # as the cast in training would
            o = o.astype(t.dtype)
    if len(t) == 0 or len(o) == 0 or t.shape[1] != o.shape[1]:
        return 0
    train_keys = _row_keys(t) if train_keys is None else train_keys
    other_keys = _row_keys(o)
    candidates = np.flatnonzero(np.isin(other_keys, train_keys))
    if candidates.size == 0:
        return 0
    matches = np.flatnonzero(np.isin(train_keys, other_keys[candidates]))
    seen = {_digest(t[i]) for i in matches}
    return sum(_digest(o[i]) in seen for i in candidates)


def constant_columns(rows: np.ndarray) -> np.ndarray:
    """Indices of the columns holding one value in every row. Candidates come from an evenly spaced
    sample of ``CONSTANT_SAMPLE_ROWS`` rows (a column constant in all rows is constant in any sample), and
    only they are then compared over every row, so the answer is exact and a data set with no constant
    column costs the sample alone."""
    if len(rows) == 0:
        return np.zeros(0, dtype=np.int64)
    sample = rows[::max(1, -(-len(rows) // CONSTANT_SAMPLE_ROWS))]
    with np.errstate(invalid="ignore"):
        candidates = np.flatnonzero(sample.min(axis=0) == sample.max(axis=0))
    if candidates.size == 0:
        return candidates
    first = rows[0, candidates]
    constant = np.ones(candidates.size, dtype=bool)
    step = max(1, KEY_BLOCK_BYTES // max(rows.dtype.itemsize * candidates.size, 1))
    for start in range(0, len(rows), step):
        constant &= (rows[start:start + step, candidates] == first).all(axis=0)
    return candidates[constant]


def unrepresentable_columns(rows: np.ndarray) -> np.ndarray:
    """Indices of the columns holding NaN, infinity or a magnitude beyond float32's largest, found in
    one blocked pass (NaN propagates through ``np.maximum``, so such a column's maximum is NaN)."""
    largest = np.zeros(rows.shape[1], dtype=np.float64)
    step = max(1, KEY_BLOCK_BYTES // max(rows.dtype.itemsize * rows.shape[1], 1))
    with np.errstate(invalid="ignore"):
        for start in range(0, len(rows), step):
            np.maximum(largest, np.abs(rows[start:start + step]).max(axis=0), out=largest)
        return np.flatnonzero(~(largest <= FLOAT32_MAX))


def _may_overflow(rows: np.ndarray) -> bool:
    # Floats wider than float32: the only ones that can hold values beyond float32's range, and through
    # the service the only way a non-finite feature reaches training (uploads refuse NaN and infinity).
    return rows.dtype.kind == "f" and rows.dtype.itemsize > 4 and len(rows) > 0 and rows.shape[1] > 0


def measure_features(splits: TrainData, *, integer_inputs: bool = False) -> dict[str, Any]:
    """What the feature checks need, from the splits as they will train (before normalisation)::

        {"rows": {"train": n, "val": n | None, "test": n | None}, "features": d, "per_sample_rank": r,
         "constant": [feature index, ...] | None, "non_finite": {"train": [...], "val": [...], ...},
         "shared": {"val": count, "test": count}}

    Feature indices count over a sample's flattened values. ``constant`` is None for token ids (an
    embedding's inputs) and for samples of rank >= 2 (images, sequences), where a constant position
    (a border, padding) is ordinary. ``non_finite`` has an entry for each split of floats wider than
    float32 (narrower ones cannot exceed its range, and uploads refuse NaN and infinity).
    """
    x_train = np.asarray(splits.x_train)
    train = _rows(x_train)
    others = {name: np.asarray(a) for name, a in (("val", splits.x_val), ("test", splits.x_test))
              if a is not None}
    report: dict[str, Any] = {
        "rows": {"train": len(train), "val": len(others["val"]) if "val" in others else None,
                 "test": len(others["test"]) if "test" in others else None},
        "features": int(train.shape[1]), "per_sample_rank": x_train.ndim - 1,
        "constant": None, "non_finite": {}, "shared": {},
    }
    if not integer_inputs and x_train.ndim == 2:
        report["constant"] = constant_columns(train).tolist()
    for name, rows in (("train", train), *((name, _rows(a)) for name, a in others.items())):
        if _may_overflow(rows):
            report["non_finite"][name] = unrepresentable_columns(rows).tolist()
    train_keys = _row_keys(train) if others and len(train) else None
    for name, a in others.items():
        report["shared"][name] = shared_rows(train, a, train_keys) if train_keys is not None else 0
    return report


# --- rules -------------------------------------------------------------------------------------------


def _listed(indices: list[int]) -> str:
    shown = ", ".join(str(i) for i in indices[:10])
    return shown + (f" and {len(indices) - 10} more" if len(indices) > 10 else "")


def check_leakage(report: dict, ctx: RunContext) -> list[dict]:
    """Validation or test rows identical to training rows: their metrics overstate the model."""
    shared = {name: count for name, count in (report.get("shared") or {}).items() if count}
    if not shared:
        return []
    rows = report["rows"]
    evidence = {name: {"rows": rows[name], "shared_with_train": count, "fraction": count / rows[name]}
                for name, count in shared.items()}
    worst = max(e["fraction"] for e in evidence.values())
    parts = [f"{count} of {rows[name]} {SPLIT_NAMES[name]} rows ({count / rows[name]:.1%})"
             for name, count in shared.items()]
    split = (ctx.spec.get("dataset") or {}).get("validation_split") or 0
    cause = (" Rows repeated in the data set land on both sides of validation_split." if split and "val" in shared
             else "")
    return [finding(
        "data_leakage", "warning" if worst >= LEAKAGE_WARNING_FRACTION else "info",
        f"{' and '.join(parts)} are identical to training rows, so those metrics overstate how the model "
        f"does on new data.{cause} Remove the duplicates from the data set and upload it again; no spec "
        "setting can.",
        {**evidence, "warning_fraction": LEAKAGE_WARNING_FRACTION, "training_rows": rows["train"]})]


def check_constant_features(report: dict, ctx: RunContext) -> list[dict]:
    constant = report.get("constant") or []
    if not constant:
        return []
    total = report["features"]
    every = len(constant) == total
    return [finding(
        "constant_feature", "warning" if every else "info",
        ("Every feature is constant in the training split: the model can learn nothing from its inputs."
         if every else
         f"Feature(s) {_listed(constant)} ({len(constant)} of {total}) hold one value in every training "
         "row, so they carry no information.")
        + " Check how the data set was built (a column filled with a default, a failed join), and drop "
          "them from the data set if they are meant to be constant.",
        {"features": constant[:LISTED], "count": len(constant), "of": total,
         "training_rows": report["rows"]["train"]})]


def check_non_finite_features(report: dict, ctx: RunContext) -> list[dict]:
    bad = {name: indices for name, indices in (report.get("non_finite") or {}).items() if indices}
    if not bad:
        return []
    where = "; ".join(f"{SPLIT_NAMES.get(name, 'training')} split: feature(s) {_listed(indices)}"
                      for name, indices in bad.items())
    return [finding(
        "non_finite_feature", "error",
        f"Some features hold NaN, infinity or values beyond float32's range (+-{FLOAT32_MAX:.3g}, which "
        f"become infinite when the model reads them): {where}. The loss would be NaN. Fix or drop those "
        "values and upload the data set again.",
        {name: {"features": indices[:LISTED], "count": len(indices)} for name, indices in bad.items()}
        | {"float32_max": FLOAT32_MAX})]


def check_class_balance(y_train: np.ndarray, ctx: RunContext, output_units: int | None) -> list[dict]:
    """Severe imbalance of the training labels: the largest class at least ``IMBALANCE_RATIO`` times the
    smallest class present. Quiet once ``training.class_weight`` is set."""
    if canonical_loss(ctx.spec.get("loss")) not in CLASSIFICATION_LOSSES:
        return []
    if (ctx.spec.get("training") or {}).get("class_weight"):
        return []
    y = np.asarray(y_train)
    if canonical_loss(ctx.spec.get("loss")) != "categorical_crossentropy" and y.ndim > 1 and math.prod(y.shape[1:]) > 1:
        return []  # several labels per row (multi-label): no one class per row to count
    labels = class_labels(y)
    if labels.size == 0 or labels.min() < 0:
        return []
    n_classes = max(2 if (output_units or 1) == 1 else int(output_units), int(labels.max()) + 1)
    counts = np.bincount(labels, minlength=n_classes)
    present = np.flatnonzero(counts)
    if present.size < 2:
        return []
    majority, minority = present[np.argmax(counts[present])], present[np.argmin(counts[present])]
    ratio = counts[majority] / counts[minority]
    if ratio < IMBALANCE_RATIO:
        return []
    absent = np.flatnonzero(counts == 0).tolist()
    evidence: dict[str, Any] = {
        "majority_class": int(majority), "majority_count": int(counts[majority]),
        "minority_class": int(minority), "minority_count": int(counts[minority]),
        "ratio": float(ratio), "threshold": IMBALANCE_RATIO, "classes": n_classes,
        "training_rows": int(labels.size), "absent_classes": absent[:LISTED],
    }
    if n_classes <= LISTED:
        evidence["class_counts"] = {str(c): int(counts[c]) for c in range(n_classes)}
    return [finding(
        "class_imbalance", "warning",
        f"The training labels are severely imbalanced: class {majority} has {counts[majority]} rows, class "
        f"{minority} only {counts[minority]} ({ratio:.3g} times fewer)"
        + (f", and class(es) {_listed(absent)} none" if absent else "")
        + ". The model can score well by predicting the common classes. Set training.class_weight: "
          "\"balanced\" (each class weighted by n_samples / (n_classes * its count)), and judge it by "
          "per-class metrics (auc, precision, recall) rather than accuracy.",
        evidence, suggested_change={"training": {"class_weight": "balanced"}}, basis="class_counts")]


def check_target_range(y_trained: np.ndarray, ctx: RunContext) -> list[dict]:
    """Regression targets (as the loss sees them, after normalize_targets) outside what the final
    activation can output."""
    if canonical_loss(ctx.spec.get("loss")) not in REGRESSION_LOSSES:
        return []
    index, activation = _final_activation(ctx.layers)
    if activation not in OUTPUT_RANGES or index is None:
        return []
    y = np.asarray(y_trained)
    if y.size == 0 or y.dtype.kind not in "biuf":
        return []
    low, high = OUTPUT_RANGES[activation]
    with np.errstate(invalid="ignore"):
        y_min, y_max = float(np.min(y)), float(np.max(y))
    if not (y_min < low or y_max > high):
        return []
    outside = int(np.count_nonzero((y < low) | (y > high)))
    dataset = ctx.spec.get("dataset") or {}
    normalized = (dataset.get("normalize_targets") or "none") != "none"
    return [finding(
        "label_out_of_range", "warning",
        f"model.layers[{index}] applies {activation}, whose outputs lie in [{_g(low)}, {_g(high)}], but "
        f"{outside} of {y.size} training targets{' (after normalize_targets)' if normalized else ''} lie "
        f"outside it (from {_g(y_min)} to {_g(y_max)}): the model can never predict them. Use a linear "
        "final activation.",
        {"activation": activation, "output_range": [low, high], "target_min": y_min, "target_max": y_max,
         "outside": outside, "targets": int(y.size), "normalize_targets": dataset.get("normalize_targets")},
        layer=f"{ctx.layers[index]['type']}_{index + 1}",
        suggested_change=ctx.with_layers({index: {"activation": "linear"}}), basis="target_range")]


def analyze_data(report: dict | None, y_trained: np.ndarray, ctx: RunContext,
                 output_units: int | None) -> list[dict]:
    """Every data finding: the feature checks from ``measure_features``' report (None: not measured),
    and the label checks on the training targets as trained."""
    out: list[dict] = []
    if report is not None:
        out += check_leakage(report, ctx) + check_constant_features(report, ctx) + \
            check_non_finite_features(report, ctx)
    return out + check_class_balance(y_trained, ctx, output_units) + check_target_range(y_trained, ctx)
