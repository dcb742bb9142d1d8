"""Parsing, validating and loading training data without TensorFlow.

Used by the API (to check an upload and describe it before a job is accepted) and by the workers (to
load the arrays for `workers.trainer.train`). Only NumPy and the standard library are imported here;
scikit-learn is imported on first use of a built-in data set.
"""
from __future__ import annotations

from trainyard.datasets.builtin import BUILTIN_NAMES, SPLIT_SEED, TEST_FRACTION, load_builtin
from trainyard.datasets.errors import DatasetError
from trainyard.datasets.npz import ARRAY_NAMES, inspect_npz, load_npz
from trainyard.datasets.summary import MAX_DISTINCT_FOR_CLASSIFICATION, DatasetSummary, infer_task
from trainyard.datasets.tabular import inspect_csv, load_csv

__all__ = [
    "ARRAY_NAMES",
    "BUILTIN_NAMES",
    "MAX_DISTINCT_FOR_CLASSIFICATION",
    "SPLIT_SEED",
    "TEST_FRACTION",
    "DatasetError",
    "DatasetSummary",
    "infer_task",
    "inspect_csv",
    "inspect_npz",
    "load_builtin",
    "load_csv",
    "load_npz",
]
