import numpy as np
import pytest

from workers.trainer import TrainData


@pytest.fixture
def classification_data():
    """64 rows, 4 features, 3 classes; the label depends on the features so training can learn."""
    rng = np.random.default_rng(42)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5).astype(np.int64)
    return TrainData(x, y)


@pytest.fixture
def regression_data():
    rng = np.random.default_rng(7)
    x = rng.normal(loc=50.0, scale=20.0, size=(64, 4)).astype(np.float32)
    y = (x @ np.array([3.0, -2.0, 1.0, 0.5]) + 100.0).astype(np.float32)
    return TrainData(x, y)


@pytest.fixture
def mnist_like():
    """192 rows of 784 random features in [0, 1) and 10 random classes: digits-shaped data for diagnostics."""
    rng = np.random.default_rng(3)
    x = rng.random((192, 784), dtype=np.float32)
    y = rng.integers(0, 10, size=192)
    return TrainData(x, y)
