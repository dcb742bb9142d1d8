"""Built-in data sets from the files bundled with scikit-learn (nothing is downloaded).

scikit-learn is imported inside `load_builtin` only: it is slow to import and the API needs it only when
a job actually uses a built-in data set.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

import numpy as np

from trainyard.datasets.errors import fail

logger = logging.getLogger(__name__)

# Names as used in dataset ids ("builtin:<name>"); the job-spec catalogue lists the same names.
BUILTIN_NAMES: tuple[str, ...] = ("digits", "iris", "breast_cancer", "wine", "diabetes")
_REGRESSION = frozenset({"diabetes"})
# The test split is fixed (same samples for every job and every release) so test metrics of different
# jobs on the same built-in data set are comparable.
TEST_FRACTION = 0.2
SPLIT_SEED = 20260101


def load_builtin(name: str) -> dict[str, np.ndarray | None]:
    """Load a built-in data set as `{x_train, y_train, x_val: None, y_val: None, x_test, y_test}`.

    The test split is `round(TEST_FRACTION * n)` samples taken from a permutation drawn with
    `numpy.random.default_rng(SPLIT_SEED)`; the training split is the rest, in permutation order.
    x is float32; y is int64 for the classification sets and float32 for "diabetes".
    """
    if name not in BUILTIN_NAMES:
        fail("name", f"There is no built-in data set named '{name[:60]}'; choose one of "
             f"{', '.join(BUILTIN_NAMES)}.")
    bunch = _loader(name)()
    x = np.asarray(bunch.data, dtype=np.float32)
    y_dtype = np.float32 if name in _REGRESSION else np.int64
    y = np.asarray(bunch.target, dtype=y_dtype)
    n = len(x)
    order = np.random.default_rng(SPLIT_SEED).permutation(n)
    n_test = round(TEST_FRACTION * n)
    test, train = order[:n_test], order[n_test:]
    return {"x_train": x[train], "y_train": y[train], "x_val": None, "y_val": None,
            "x_test": x[test], "y_test": y[test]}


def _loader(name: str) -> Callable[[], Any]:
    from sklearn import datasets as skd

    loaders: dict[str, Callable[[], Any]] = {
        "digits": skd.load_digits,
        "iris": skd.load_iris,
        "breast_cancer": skd.load_breast_cancer,
        "wine": skd.load_wine,
        "diabetes": skd.load_diabetes,
    }
    return loaders[name]
