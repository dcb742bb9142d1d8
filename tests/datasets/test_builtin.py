"""Built-in data sets: shapes, dtypes and a split that never changes."""
from __future__ import annotations

import numpy as np
import pytest

from trainyard.datasets import BUILTIN_NAMES, DatasetError, load_builtin

EXPECTED = {  # name: (samples, features, y dtype)
    "digits": (1797, 64, np.int64),
    "iris": (150, 4, np.int64),
    "breast_cancer": (569, 30, np.int64),
    "wine": (178, 13, np.int64),
    "diabetes": (442, 10, np.float32),
}


def test_names() -> None:
    assert set(BUILTIN_NAMES) == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shapes_and_split(name: str) -> None:
    n, features, y_dtype = EXPECTED[name]
    data = load_builtin(name)
    n_test = round(0.2 * n)
    assert data["x_train"].shape == (n - n_test, features) and data["x_test"].shape == (n_test, features)
    assert data["y_train"].shape == (n - n_test,) and data["y_test"].shape == (n_test,)
    assert data["x_train"].dtype == np.float32 and data["x_test"].dtype == np.float32
    assert data["y_train"].dtype == y_dtype and data["y_test"].dtype == y_dtype
    assert data["x_val"] is None and data["y_val"] is None

    again = load_builtin(name)
    for key in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(data[key], again[key])


def test_split_is_the_documented_permutation() -> None:
    from sklearn.datasets import load_iris

    iris = load_iris()
    order = np.random.default_rng(20260101).permutation(150)
    data = load_builtin("iris")
    np.testing.assert_array_equal(data["y_test"], iris.target[order[:30]])
    np.testing.assert_array_equal(data["x_train"], iris.data[order[30:]].astype(np.float32))
    # A shuffled split of a class-sorted data set: every class appears in the test split.
    assert set(data["y_test"].tolist()) == {0, 1, 2}


def test_unknown_name() -> None:
    with pytest.raises(DatasetError) as err:
        load_builtin("mnist")
    assert err.value.errors[0]["field"] == "name"
    assert "'mnist'" in err.value.detail and "digits" in err.value.detail
