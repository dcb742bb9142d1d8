"""`DatasetSummary` and the heuristic that guesses the task from the targets.

The heuristic reads the targets block by block (`TargetStats`), so an upload's labels are never held in
memory whole: a few hundred KB of compressed `.npz` can declare gigabytes of them.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

# Float targets whose values are all whole numbers are still treated as class labels up to this many
# distinct values; beyond it they look like a measured quantity (counts, prices, ages).
MAX_DISTINCT_FOR_CLASSIFICATION = 50
# Rows of a Fortran-ordered one-hot target checked per pass, one bit each (16 MiB). Columns are stored one
# after the other, so which rows already hold a 1 must be remembered; beyond this many rows the member is
# read again for each further window of rows instead of remembering more.
ONE_HOT_WINDOW_ROWS = 1 << 27


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


class TargetStats:
    """`infer_task`'s heuristic over every split's targets, fed one block of values at a time.

    Built from what the headers tell (per-sample shape and the dtypes of every split), it keeps only what
    the guess needs: the smallest and largest label, up to `MAX_DISTINCT_FOR_CLASSIFICATION` + 1 distinct
    values, and for one-hot candidates whether each row seen so far holds exactly one 1. Whether a target
    array needs reading at all is `needs_values`.
    """

    def __init__(self, target_shape: tuple[int, ...], dtypes: Sequence[np.dtype]) -> None:
        self.target_shape = tuple(target_shape)
        kinds = {np.dtype(d).kind for d in dtypes}
        if self.target_shape in ((), (1,)):
            self.mode = "bool" if kinds == {"b"} else "int" if kinds <= set("biu") else "float"
        elif len(self.target_shape) == 1 and self.target_shape[0] >= 2:
            self.mode = "one_hot"
        else:
            self.mode = "other"
        self.lo: int | None = None
        self.hi: int | None = None
        self.distinct: set[float] = set()
        self.decided_regression = False

    @property
    def needs_values(self) -> bool:
        return self.mode in ("int", "float", "one_hot") and not self.decided_regression

    def add(self, values: np.ndarray) -> None:
        """Take one block of a scalar target's values (any shape; only the values count)."""
        if not self.needs_values or values.size == 0:
            return
        if self.mode == "int":
            lo, hi = int(values.min()), int(values.max())
            self.lo = lo if self.lo is None else min(self.lo, lo)
            self.hi = hi if self.hi is None else max(self.hi, hi)
        elif self.mode == "float":
            # In the block's own dtype (no float64 copy): integers and floats that are equal hash alike.
            v = values.reshape(-1)
            if np.any(v < 0) or (v.dtype.kind == "f" and np.any(v != np.floor(v))):
                self.decided_regression = True
                return
            self.distinct.update(_distinct(v).tolist())
            if len(self.distinct) > MAX_DISTINCT_FOR_CLASSIFICATION:
                self.decided_regression = True

    def one_hot_rows(self, n_rows: int, fortran: bool) -> "OneHotRows":
        """A checker for one target array of `n_rows` rows (one-hot candidates only)."""
        return OneHotRows(n_rows, self.target_shape[0], fortran)

    def not_one_hot(self) -> None:
        self.decided_regression = True

    def result(self) -> tuple[str, int | None]:
        if self.mode == "bool":
            return "classification", 2
        if self.decided_regression or self.mode == "other":
            return "regression", None
        if self.mode == "int":
            if self.lo is not None and self.hi is not None and self.lo >= 0:
                return "classification", self.hi + 1
            return "regression", None
        if self.mode == "float":
            if not self.distinct:
                return "regression", None
            return "classification", int(max(self.distinct)) + 1
        return "classification", int(self.target_shape[0])  # one-hot, every array checked


class OneHotRows:
    """Whether a (rows, k) array, read as flat blocks in its storage order, is one-hot: every entry 0 or 1
    and exactly one 1 per row.

    In C order each row's entries are adjacent, so the rows holding a 1 must come strictly increasing. In
    Fortran order the array is stored column after column, so the rows already holding a 1 are remembered,
    one bit each, for `window` rows at a time; `windows()` says how many passes over the array that takes.
    """

    def __init__(self, n_rows: int, k: int, fortran: bool, window: int | None = None) -> None:
        self.n, self.k, self.fortran = n_rows, k, fortran
        self.window = window or ONE_HOT_WINDOW_ROWS
        self.ok = True
        self.ones = 0
        self._last_row = -1
        self._lo = 0
        self._rows = 0
        self._seen = np.zeros(0, dtype=np.uint8)

    def windows(self) -> range:
        """Start rows of the passes: one for C order, one per `window` rows for Fortran order."""
        return range(0, self.n, self.window) if self.fortran else range(0, 1)

    def start_pass(self, lo: int) -> None:
        self._lo, self._rows, self._pass_ones = lo, min(self.window, self.n - lo), 0
        if self.fortran:
            self._seen = np.zeros((self._rows + 7) // 8, dtype=np.uint8)

    def add(self, values: np.ndarray, offset: int) -> None:
        """`values` are the flat entries from position `offset` on (in storage order)."""
        if not self.ok:
            return
        flat = values.reshape(-1)
        ones = flat == 1
        if self._lo == 0 and np.count_nonzero(ones) + np.count_nonzero(flat == 0) != flat.size:
            self.ok = False
            return
        where = np.flatnonzero(ones) + offset
        if self.fortran:
            rows = where % self.n - self._lo
            rows = rows[(rows >= 0) & (rows < self._rows)]
            byte, bit = rows >> 3, np.left_shift(1, rows & 7).astype(np.uint8)
            # A 1 in a row that already has one, or twice in this block (a block may span columns).
            if rows.size and (np.any(self._seen[byte] & bit) or _distinct(rows).size != rows.size):
                self.ok = False
                return
            np.bitwise_or.at(self._seen, byte, bit)
            self._pass_ones += rows.size
        else:
            rows = where // self.k
            if rows.size and (rows[0] <= self._last_row or np.any(np.diff(rows) <= 0)):
                self.ok = False
                return
            if rows.size:
                self._last_row = int(rows[-1])
            self.ones += rows.size

    def end_pass(self) -> None:
        if self.fortran:
            # No row of the window holds two 1s, so as many 1s as rows means one in every row.
            self.ok = self.ok and self._pass_ones == self._rows
            self.ones += self._pass_ones

    def finish(self) -> bool:
        """True when the array is one-hot (after every pass)."""
        return self.ok and self.ones == self.n


def _distinct(values: np.ndarray) -> np.ndarray:
    """The distinct values, sorted. By sorting: numpy 2's hash-based `unique` of integers takes about a
    second per million distinct ones."""
    ordered = np.sort(values.reshape(-1))
    if ordered.size == 0:
        return ordered
    return ordered[np.concatenate(([True], ordered[1:] != ordered[:-1]))]


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

    Uploads are guessed by the same `TargetStats`, fed block by block from the archive.
    """
    stats = TargetStats(ys[0].shape[1:], [y.dtype for y in ys])
    for y in ys:
        feed_targets(stats, y, lambda: array_blocks(y))
    return stats.result()


def feed_targets(stats: TargetStats, y: np.ndarray | Any, blocks: Any) -> None:
    """Feed one target array to `stats`; `blocks()` yields `(offset, flat values)` in storage order and is
    called once per pass (more than once only for a huge Fortran-ordered one-hot candidate)."""
    if not stats.needs_values:
        return
    if stats.mode != "one_hot":
        for _offset, values in blocks():
            stats.add(values)
            if not stats.needs_values:
                return
        return
    checker = stats.one_hot_rows(int(y.shape[0]), _is_fortran(y))
    for lo in checker.windows():
        checker.start_pass(lo)
        for offset, values in blocks():
            checker.add(values, offset)
            if not checker.ok:
                break
        checker.end_pass()
        if not checker.ok:
            break
    if not checker.finish():
        stats.not_one_hot()


def _is_fortran(y: Any) -> bool:
    flags = getattr(y, "flags", None)
    if flags is not None:  # an array in memory: its storage order is what _blocks_of walks
        return bool(flags.f_contiguous and not flags.c_contiguous)
    return bool(getattr(y, "fortran", False))


def array_blocks(arr: np.ndarray, block_bytes: int = 1024 * 1024) -> Iterator[tuple[int, np.ndarray]]:
    """An array in memory as `(flat offset, values)` blocks in its storage order, as an archive member is
    streamed (C order, or Fortran order for a Fortran-contiguous array)."""
    flat = arr.ravel(order="K") if (arr.flags.c_contiguous or arr.flags.f_contiguous) else arr.ravel()
    per_block = max(block_bytes // max(arr.dtype.itemsize, 1), 1)
    for start in range(0, flat.size, per_block):
        yield start, flat[start:start + per_block]
