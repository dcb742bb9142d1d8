"""The task heuristic and the package's import-time promises."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from trainyard.datasets import DatasetError, infer_task


@pytest.mark.parametrize("ys, expected", [
    ([np.array([0, 2, 1])], ("classification", 3)),
    ([np.array([[0], [4]], dtype=np.uint8)], ("classification", 5)),  # CIFAR-style (n, 1) labels
    ([np.array([True, False])], ("classification", 2)),
    ([np.array([0.0, 1.0, 1.0])], ("classification", 2)),
    ([np.array([0, 1]), np.array([9])], ("classification", 10)),  # label seen only in another split
    ([np.array([-1, 1])], ("regression", None)),
    ([np.array([0.5, 1.0])], ("regression", None)),
    ([np.arange(51, dtype=np.float64)], ("regression", None)),
    ([np.eye(4)[[0, 3, 1]]], ("classification", 4)),
    ([np.array([[1.0, 1.0], [0.0, 1.0]])], ("regression", None)),  # multi-label, not one-hot
    ([np.ones((2, 3, 3))], ("regression", None)),
])
def test_infer_task(ys: list[np.ndarray], expected: tuple[str, int | None]) -> None:
    assert infer_task(ys) == expected


def test_error_shape() -> None:
    err = DatasetError([{"field": "file", "message": "One."}, {"field": "target", "message": "Two."}])
    assert err.detail == "One. Two." and str(err) == "One. Two."
    assert DatasetError.single("target", "Bad.").errors == [{"field": "target", "message": "Bad."}]


def test_import_is_light() -> None:
    code = ("import sys, trainyard.datasets; "
            "print(sorted(m for m in ('sklearn', 'tensorflow', 'keras', 'flask') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
