"""`DatasetSummary` and the heuristic that guesses the task from the targets."""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np

logger = logging.getLogger(__name__)

# Float targets whose values are all whole numbers are still treated as class labels up to this many
# distinct values; beyond it they look like a measured quantity (counts, prices, ages).
MAX_DISTINCT_FOR_CLASSIFICATION = 50


@dataclass
class DatasetSummary:
    """What the API needs to know about a data set without loading it into a model.

    Shapes are per sample. `task` is a guess (see `infer_task`) that the job spec may use for defaults;
    the user's spec always wins.
    """

    format: str  # "npz" | "csv"
    splits: dict[str, int | None]  # {"train": n, "val": n | None, "test": n | None}
    input_shape: list[int]
    x_dtype: str
    y_dtype: str
    target_shape: list[int]  # [] for one scalar label or value per sample
    task: str  # "classification" | "regression"
    n_classes: int | None = None
    class_names: list[str] | None = None  # CSV string targets: index i is label i
    feature_names: list[str] | None = None  # CSV only

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def infer_task(ys: Sequence[np.ndarray]) -> tuple[str, int | None]:
    """Guess `(task, n_classes)` from the target arrays of every split present.

    The heuristic, applied to all splits together so a label seen only in the test split still counts:

    - Scalar targets (per-sample shape `()` or `(1,)`, the latter being how e.g. CIFAR labels ship):
      - bool dtype: classification with 2 classes;
      - integer dtype with every label >= 0: classification, `n_classes = max label + 1`;
      - float dtype whose values are all whole numbers >= 0 with at most
        `MAX_DISTINCT_FOR_CLASSIFICATION` distinct values: classification, `n_classes = max + 1`;
      - anything else (negative labels, fractions, many distinct values): regression.
    - One-hot targets (per-sample shape `(k,)` with k >= 2, every entry 0 or 1, every row summing to 1):
      classification with `n_classes = k`.
    - Everything else: regression, `n_classes = None`.
    """
    target_shape = ys[0].shape[1:]
    if target_shape in ((), (1,)):
        if all(y.dtype.kind == "b" for y in ys):
            return "classification", 2
        if all(y.dtype.kind in "biu" for y in ys):
            lo = min(int(y.min()) for y in ys)
            hi = max(int(y.max()) for y in ys)
            if lo >= 0:
                return "classification", hi + 1
            return "regression", None
        values = np.concatenate([y.reshape(-1).astype(np.float64, copy=False) for y in ys])
        if np.all(values >= 0) and np.all(values == np.floor(values)):
            distinct = np.unique(values)
            if distinct.size <= MAX_DISTINCT_FOR_CLASSIFICATION:
                return "classification", int(distinct[-1]) + 1
        return "regression", None
    if len(target_shape) == 1 and target_shape[0] >= 2 and _all_one_hot(ys):
        return "classification", int(target_shape[0])
    return "regression", None


def _all_one_hot(ys: Sequence[np.ndarray]) -> bool:
    for y in ys:
        if not np.all((y == 0) | (y == 1)):
            return False
        if not np.all(y.sum(axis=1, dtype=np.float64) == 1):
            return False
    return True
