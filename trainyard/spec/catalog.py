"""The data sets a spec can name: built-in ones (scikit-learn's bundled files) and uploaded ones.

Only metadata lives here, so the API can check shapes and losses against a data set without loading
it (and without importing scikit-learn); `trainyard.datasets` loads the arrays.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

#: Built-in data sets keep a fixed test split of this fraction of their samples (the last
#: `round(n * BUILTIN_TEST_FRACTION)` after the loader's fixed shuffle; see `trainyard.datasets`).
BUILTIN_TEST_FRACTION = 0.2

BUILTIN_ID_RE = re.compile(r"^builtin:[a-z_]+\Z")
#: Uploaded data set ids are "ds_" + uuid4().hex.
UPLOADED_ID_RE = re.compile(r"^ds_[0-9a-f]{32}\Z")


@dataclass(frozen=True)
class DatasetInfo:
    """What validation needs to know about a data set; shapes are per sample."""

    id: str
    input_shape: tuple[int, ...]
    task: str  # "classification" | "regression"
    n_classes: int | None
    has_validation: bool
    has_test: bool
    target_shape: tuple[int, ...]  # () for a scalar target (class index or single value)
    train_samples: int
    test_samples: int = 0


DatasetLookup = Callable[[str], "DatasetInfo | None"]


def builtin_train_samples(n_samples: int) -> int:
    """Training samples left after the fixed test split of a built-in data set."""
    return n_samples - round(BUILTIN_TEST_FRACTION * n_samples)


def _builtin(name: str, n_features: int, n_samples: int, n_classes: int | None) -> DatasetInfo:
    return DatasetInfo(
        id=f"builtin:{name}",
        input_shape=(n_features,),
        task="classification" if n_classes else "regression",
        n_classes=n_classes,
        has_validation=False,
        has_test=True,
        target_shape=(),
        train_samples=builtin_train_samples(n_samples),
        test_samples=n_samples - builtin_train_samples(n_samples),
    )


# Numbers from scikit-learn's bundled files; tests/spec/test_catalog.py checks them against sklearn.
BUILTIN_DATASETS: dict[str, DatasetInfo] = {
    info.id: info
    for info in (
        _builtin("digits", 64, 1797, 10),
        _builtin("iris", 4, 150, 3),
        _builtin("breast_cancer", 30, 569, 2),
        _builtin("wine", 13, 178, 3),
        _builtin("diabetes", 10, 442, None),
    )
}
