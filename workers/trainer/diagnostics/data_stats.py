"""Scale statistics of the raw (not yet normalised) training data, for the unscaled_* findings."""

from __future__ import annotations

import numpy as np

# Enough rows to estimate means and spreads; bounded so a big data set costs milliseconds (10,000 rows of
# MNIST-sized inputs cost 0.15 s, a few per cent of a short job).
MAX_ROWS = 2_048


def _stats(a: np.ndarray) -> dict[str, float] | None:
    a = np.asarray(a)
    if a.size == 0 or not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        return None
    # Evenly spaced rows, not the first ones: a data set sorted by class or time is still represented.
    step = max(1, -(-len(a) // MAX_ROWS))
    sample = a[::step]
    rows = sample.reshape(len(sample), -1)
    if rows.dtype != np.float64:
        # Work in float32 (a third of the time of float64 copies), accumulating sums in float64.
        rows = rows.astype(np.float32, copy=False)
    with np.errstate(invalid="ignore", over="ignore"):  # non-finite data gives NaN statistics, no warnings
        return _summary(rows)


def _summary(rows: np.ndarray) -> dict[str, float]:
    mean = rows.mean(axis=0, dtype=np.float64)
    # Two passes (deviations from the mean, then their squares), so a large offset cannot cancel the
    # spread away; the deviations reuse one buffer.
    deviations = rows - mean.astype(rows.dtype)
    np.square(deviations, out=deviations)
    std = np.sqrt(deviations.mean(axis=0, dtype=np.float64))
    low, high = float(rows.min()), float(rows.max())
    return {
        "max_abs_mean": float(np.abs(mean).max()),
        "max_std": float(std.max()),
        "min": low,
        "max": high,
        # A NaN makes min and max NaN, an infinity one of them infinite.
        "finite": bool(np.isfinite(low) and np.isfinite(high)),
        "rows_sampled": int(len(rows)),
    }


def scale_stats(x: np.ndarray, y: np.ndarray, *, integer_inputs: bool = False,
                classification: bool = False) -> dict:
    """{"inputs": stats | None, "targets": stats | None}: per-feature mean/std summaries.

    Token ids (an embedding first layer) and class labels have no scale to speak of: None.
    """
    return {
        "inputs": None if integer_inputs else _stats(x),
        "targets": None if classification else _stats(y),
    }
