"""The built-in catalogue's metadata against scikit-learn's bundled files (no download)."""
from __future__ import annotations

import numpy as np
import pytest
import sklearn.datasets

from trainyard.spec import BUILTIN_DATASETS, BUILTIN_TEST_FRACTION, builtin_train_samples

LOADERS = {
    "builtin:digits": sklearn.datasets.load_digits,
    "builtin:iris": sklearn.datasets.load_iris,
    "builtin:breast_cancer": sklearn.datasets.load_breast_cancer,
    "builtin:wine": sklearn.datasets.load_wine,
    "builtin:diabetes": sklearn.datasets.load_diabetes,
}


def test_catalogue_lists_exactly_the_bundled_sets():
    assert set(BUILTIN_DATASETS) == set(LOADERS)


@pytest.mark.parametrize("dataset_id", sorted(LOADERS))
def test_builtin_matches_sklearn(dataset_id):
    bunch = LOADERS[dataset_id]()
    info = BUILTIN_DATASETS[dataset_id]
    n = bunch.data.shape[0]
    assert info.id == dataset_id
    assert info.input_shape == bunch.data.shape[1:]
    assert info.target_shape == bunch.target.shape[1:] == ()
    assert info.train_samples == n - round(BUILTIN_TEST_FRACTION * n)
    assert (info.has_test, info.has_validation) == (True, False)
    if np.issubdtype(bunch.target.dtype, np.integer):
        assert info.task == "classification"
        assert info.n_classes == len(np.unique(bunch.target))
        assert sorted(np.unique(bunch.target)) == list(range(info.n_classes))
    else:
        assert (info.task, info.n_classes) == ("regression", None)


def test_train_samples_formula():
    assert builtin_train_samples(1797) == 1797 - 359
    assert builtin_train_samples(150) == 120
    assert BUILTIN_TEST_FRACTION == 0.2
