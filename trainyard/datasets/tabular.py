"""Validating and loading CSV uploads: a header row, numeric feature columns and one target column.

Parsing is streaming and bounded. The file is read in blocks of whole lines (`_BLOCK_BYTES`); nothing but
the block at hand, the header and a few counters is held while an upload is inspected, whatever its rows,
columns or cells. The caps: the file size, `max_columns`, `MAX_LINE_BYTES` per line (a line is one row:
cells may not hold line breaks), `MAX_CELL_CHARS` per cell and `MAX_CLASS_NAMES` text labels.

Each block is checked on one of two paths that accept exactly the same files with the same values:

- the fast path, for the usual block (UTF-8, one comma fewer than columns on every line, quotes only
  around whole target cells): numpy's C parser reads the feature columns (`numpy.loadtxt`, which parses
  numbers with the same routine as Python's `float`), and the checks are array operations;
- the exact path, cell by cell with the `csv` module, for any block the fast path declines. It is the
  reference: every error message comes from it, with the row, column and cell it names.
"""
from __future__ import annotations

import csv
import io
import logging
import math
import os
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, NamedTuple

import numpy as np

from trainyard.datasets.errors import fail, open_upload
from trainyard.datasets.pacing import Pacer
from trainyard.datasets.summary import DatasetSummary, TargetStats

logger = logging.getLogger(__name__)

# No number or class name needs more; also keeps us independent of csv.field_size_limit(), which is
# process-wide state we should not change from a library.
MAX_CELL_CHARS = 1_000
# A string target with more distinct values than this is almost always an id or free-text column
# chosen by mistake, and its class list would not fit in a readable summary.
MAX_CLASS_NAMES = 1_000
# One row of 10,000 numeric columns fits with room to spare; the csv module builds every cell of a line
# as an object before anything can be checked, so the line itself must be bounded.
MAX_LINE_BYTES = 1024 * 1024
# Read and checked at a time (plus the rest of a line that crosses the end of a block).
_BLOCK_BYTES = 256 * 1024
# Columns listed in the "target not found" message before it is cut short.
_LISTED_COLUMNS = 20
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_NEWLINE, _COMMA, _QUOTE = 10, 44, b'"'


@dataclass
class _Parsed:
    feature_names: list[str]
    rows: int
    x: np.ndarray | None  # float32, (rows, features); only when loading
    y: np.ndarray | None  # int64 for classification, float32 for regression; only when loading
    y_dtype: str
    task: str
    n_classes: int | None
    class_names: list[str] | None
    fast_blocks: int = 0  # blocks the fast path took (the rest took the exact path)


def inspect_csv(path: str | os.PathLike[str], *, target: str, max_bytes: int,
                max_columns: int = 10_000) -> DatasetSummary:
    """Validate a CSV upload and describe it; raises `DatasetError` for anything unusable.

    The file must be UTF-8 with a header row; `target` names the label column and every other column
    must hold numbers in every row. The target decides the task:

    - all values numbers: regression when any value is fractional, any is negative, or there are more
      than `MAX_DISTINCT_FOR_CLASSIFICATION` distinct values; otherwise classification with the values
      as labels (`n_classes = max + 1`);
    - otherwise (text labels): classification, labels numbered 0..K-1 in sorted order of the text, which
      is kept in `class_names`.

    A CSV has only a training split; validation comes from the job's `validation_split`. Memory stays at
    a block or two whatever the file holds.
    """
    parsed = _parse(Path(path), target, max_bytes, max_columns, keep=False)
    return DatasetSummary(
        format="csv",
        splits={"train": parsed.rows, "val": None, "test": None},
        input_shape=[len(parsed.feature_names)],
        x_dtype="float32",
        y_dtype=parsed.y_dtype,
        target_shape=[],
        task=parsed.task,
        n_classes=parsed.n_classes,
        class_names=parsed.class_names,
        feature_names=parsed.feature_names,
    )


def load_csv(path: str | os.PathLike[str], target: str, *, max_bytes: int | None = None,
             max_columns: int = 10_000) -> dict[str, np.ndarray | None]:
    """Load a CSV as `{x_train, y_train, x_val: None, y_val: None, x_test: None, y_test: None}`.

    x is float32; y is int64 for classification (text labels mapped exactly as `inspect_csv` reports in
    `class_names`) and float32 for regression. Runs the same checks as `inspect_csv`.
    """
    parsed = _parse(Path(path), target, max_bytes, max_columns, keep=True)
    return {"x_train": parsed.x, "y_train": parsed.y, "x_val": None, "y_val": None, "x_test": None,
            "y_test": None}


def _parse(path: Path, target: str, max_bytes: int | None, max_columns: int, *, keep: bool, fast: bool = True,
           block_bytes: int = _BLOCK_BYTES) -> _Parsed:
    """The one parse behind `inspect_csv` (keep=False) and `load_csv`; `fast=False` takes the exact path
    for every block (the tests compare both), `block_bytes` sets the read size."""
    with open_upload(path) as fh:
        size = os.fstat(fh.fileno()).st_size
        if max_bytes is not None and size > max_bytes:
            fail("file", f"The file is {size} bytes, more than the limit of {max_bytes}. Upload a smaller "
                 "data set.")
        return _Scan(target, max_columns, keep, fast).run(_blocks(fh, max_bytes, block_bytes))


def _blocks(fh: BinaryIO, max_bytes: int | None, block_bytes: int) -> Iterator[bytes]:
    """The file as blocks of whole lines, each ending in a newline (one is added at the very end)."""
    read = 0
    left = b""
    while True:
        chunk = fh.read(block_bytes)
        read += len(chunk)
        if max_bytes is not None and read > max_bytes:  # the file grew after the size check
            fail("file", f"The file is larger than the limit of {max_bytes} bytes.")
        if not chunk:
            if left:
                yield left + b"\n"
            return
        buf = left + chunk
        cut = buf.rfind(b"\n") + 1
        if cut == 0:
            left = buf
        else:
            left = buf[cut:]
            yield buf[:cut]
        if len(left) > MAX_LINE_BYTES:  # reported with its line number by the exact path
            yield left[:MAX_LINE_BYTES + 1] + b"\n"
            return


class _Column(NamedTuple):
    """A block of the target column, factorized: its distinct cells (stripped) and each row's index."""

    names: list[str]
    codes: np.ndarray

    @classmethod
    def of(cls, cells: list[str]) -> "_Column":
        index: dict[str, int] = {}
        codes = np.fromiter((index.setdefault(c, len(index)) for c in cells), dtype=np.int64, count=len(cells))
        return cls(list(index), codes)

    def numbers(self) -> np.ndarray | None:
        """Each row's value when every cell reads as a number (Python's float, as the exact path)."""
        try:
            values = np.fromiter(map(float, self.names), dtype=np.float64, count=len(self.names))
        except ValueError:
            return None
        return values[self.codes]


@dataclass
class _Targets:
    """The target column, a cell at a time or a block at a time, in bounded memory.

    Cells that all read as numbers make a numeric target (guessed by `TargetStats`); the first that does
    not makes it a text target, whose every distinct value (numbers included) is a class name. Names are
    remembered up to `MAX_CLASS_NAMES` + 1 and numbers only as statistics, unless `keep` (loading), when
    each row's value and name index are kept too.
    """

    column: str
    keep: bool
    numeric: bool = True
    stats: TargetStats = field(default_factory=lambda: TargetStats((), [np.dtype(np.float64)]))
    first_bad: tuple[int, str] | None = None  # (row number, cell) of the first non-finite number
    names: dict[str, int] = field(default_factory=dict)
    too_many_names: bool = False
    values: list[np.ndarray] = field(default_factory=list)
    ids: list[np.ndarray] = field(default_factory=list)

    def add_names(self, column: "_Column") -> np.ndarray | None:
        """Register the names in `column`; each row's name index while names are still tracked."""
        if self.too_many_names:
            return None
        index = np.empty(len(column.names), dtype=np.int32)
        for i, name in enumerate(column.names):
            if name not in self.names:
                self.names[name] = len(self.names)
                if len(self.names) > MAX_CLASS_NAMES:
                    self.too_many_names = True
                    self.ids.clear()
                    if not self.numeric:
                        self._fail_too_many()
                    return None
            index[i] = self.names[name]
        return index[column.codes]

    def add_block(self, column: "_Column | None", numbers: np.ndarray | None, first_row: int,
                  cell_at: Callable[[int], str]) -> None:
        """One block of the target column (None once names are no longer tracked); `numbers` are its
        values when every cell is a number; `cell_at(i)` is the i-th cell's text, for a message."""
        if column is not None:
            ids = self.add_names(column)
            if self.keep and ids is not None:
                self.ids.append(ids)
        if not self.numeric:
            return
        if numbers is None:
            self.numeric = False
            self.values.clear()
            if self.too_many_names:
                self._fail_too_many()
            return
        bad = ~np.isfinite(numbers) | (np.abs(numbers) > _FLOAT32_MAX)
        if self.first_bad is None and bad.any():
            i = int(np.flatnonzero(bad)[0])
            self.first_bad = (first_row + i, cell_at(i))
        self.stats.add(numbers[~bad])
        if self.keep:
            self.values.append(numbers)

    def _fail_too_many(self) -> None:
        fail("target", f"The target column '{self.column}' has more than {MAX_CLASS_NAMES} different text "
             f"values, more than the limit of {MAX_CLASS_NAMES} classes; is it the right column?")

    def result(self) -> tuple[np.ndarray | None, str, str, int | None, list[str] | None]:
        """(y when kept, y dtype, task, n_classes, class names)."""
        if self.numeric:
            if self.first_bad is not None:
                row, cell = self.first_bad
                fail("target", f"The target column '{self.column}' at row {row} holds '{cell[:40]}', which is "
                     "not a finite number.")
            task, n_classes = self.stats.result()
            dtype = np.int64 if task == "classification" else np.float32
            y = np.concatenate(self.values).astype(dtype) if self.keep else None
            return y, np.dtype(dtype).name, task, n_classes, None
        class_names = sorted(self.names)
        y = None
        if self.keep:
            order = np.empty(len(class_names), dtype=np.int64)
            order[[self.names[n] for n in class_names]] = np.arange(len(class_names))
            y = order[np.concatenate(self.ids)]
        return y, "int64", "classification", len(class_names), class_names


class _Scan:
    def __init__(self, target: str, max_columns: int, keep: bool, fast: bool) -> None:
        self.target, self.max_columns, self.keep, self.use_fast = target, max_columns, keep, fast
        self.header: list[str] = []
        self.ti = 0
        self.line = 0  # physical lines before the block at hand
        self.rows = 0  # data rows so far
        self.targets = _Targets(target, keep)
        self.features: list[np.ndarray] = []
        self.fast_blocks = 0
        self.pacer = Pacer()

    # ------------------------------------------------------------------ the whole file
    def run(self, blocks: Iterator[bytes]) -> _Parsed:
        rest = self._read_header(blocks)
        for block in rest:
            if self.use_fast and self._fast(block):
                self.fast_blocks += 1
            else:
                self._exact(block)
            self.line += block.count(b"\n")
            self.pacer.tick()
        if self.rows == 0:
            fail("file", "The file has a header row but no data rows.")
        y, y_dtype, task, n_classes, class_names = self.targets.result()
        names = [n for i, n in enumerate(self.header) if i != self.ti]
        x = None
        if self.keep:
            x = np.concatenate(self.features) if self.features else np.empty((0, len(names)), np.float32)
        return _Parsed(names, self.rows, x, y, y_dtype, task, n_classes, class_names, self.fast_blocks)

    def _read_header(self, blocks: Iterator[bytes]) -> Iterator[bytes]:
        """Find the header (the first non-blank line); return the blocks of data after it."""
        for block in blocks:
            lines = _lines(block)
            for i, raw in enumerate(lines):
                self._check_line(raw, self.line + 1)
                text = _decode(raw, self.line + 1)
                if self.line == 0:
                    text = text.removeprefix("\ufeff")  # the byte-order mark Excel writes
                self.line += 1
                if not text.strip("\r\n"):
                    continue
                if _QUOTE not in raw and raw.count(b",") + 1 > self.max_columns:
                    fail("file", f"The file has {raw.count(b',') + 1} columns, more than the limit of "
                         f"{self.max_columns}.")
                record = self._one_record([text], self.line)
                self._set_header(record)
                tail = b"".join(lines[i + 1:])
                return _chain(tail, blocks)
        fail("file", "The file is empty; it needs a header row followed by one row per sample.")

    def _set_header(self, record: list[str]) -> None:
        if len(record) > self.max_columns:
            fail("file", f"The file has {len(record)} columns, more than the limit of {self.max_columns}.")
        header = [name.strip() for name in record]
        seen: set[str] = set()
        for position, name in enumerate(header, start=1):
            if not name:
                fail("file", f"Column {position} has no name; the first row must name every column.")
            if len(name) > MAX_CELL_CHARS:
                fail("file", f"The name of column {position} is longer than {MAX_CELL_CHARS} characters.")
            if name in seen:
                fail("file", f"Two columns are named '{name}'; column names must be unique.")
            seen.add(name)
        if self.target not in header:
            fail("target", f"There is no column named '{self.target}'. The columns are: "
                 f"{_list_columns(header)}." + _delimiter_hint(header))
        if len(header) < 2:
            fail("file", f"The file has only the target column '{self.target}'; at least one feature column is "
                 "needed.")
        self.header, self.ti = header, header.index(self.target)

    # ------------------------------------------------------------------ the fast path
    def _fast(self, block: bytes) -> bool:
        """Check (and keep) a block with array operations; False leaves it to the exact path."""
        if not block.isascii():
            try:  # commas and newlines never occur inside a UTF-8 sequence: byte positions still hold
                block.decode("utf-8")
            except UnicodeDecodeError:
                return False
        if b"\0" in block:  # cells are compared as fixed-width bytes below, which pad with NULs
            return False
        if b"\r" in block:
            if block.count(b"\r") != block.count(b"\r\n"):
                return False
            block = block.replace(b"\r\n", b"\n")  # the csv module ends lines at either; so do we
        ncols, ti = len(self.header), self.ti
        buf = np.frombuffer(block, dtype=np.uint8)
        ends = np.flatnonzero(buf == _NEWLINE).astype(np.int32)
        commas = np.flatnonzero(buf == _COMMA).astype(np.int32)
        # Exactly ncols - 1 commas on every line: no blank or ragged lines (the exact path reports those).
        # With that many in all, it holds when each line's share of the commas, in order, lies inside it.
        if commas.size != ends.size * (ncols - 1):
            return False
        starts = np.concatenate([np.zeros(1, np.int32), ends[:-1] + 1])
        seps = commas.reshape(ends.size, ncols - 1)
        if np.any(seps[:, 0] < starts) or np.any(seps[:, -1] > ends):
            return False
        longest_line = int((ends - starts).max())
        if longest_line > MAX_LINE_BYTES:
            return False
        if longest_line > MAX_CELL_CHARS:
            # Cells end at every comma and newline; each starts one past the end before it.
            bounds = np.flatnonzero((buf == _COMMA) | (buf == _NEWLINE))
            if int(np.diff(bounds, prepend=-1).max()) - 1 > MAX_CELL_CHARS:
                return False
        target_start = starts if ti == 0 else seps[:, ti - 1] + 1
        target_end = ends if ti == ncols - 1 else seps[:, ti]
        del commas, seps
        text = block.decode("utf-8")
        feature_cols = [i for i in range(ncols) if i != ti]
        quoted = _QUOTE in block
        numbers = None
        if self.targets.numeric and not quoted:
            try:
                both = _loadtxt(text, None)
                x, numbers = both[:, feature_cols], both[:, ti]
                del both
            except ValueError:
                pass
        if numbers is None:
            try:
                x = _loadtxt(text, feature_cols)
            except ValueError:
                return False
        del text
        # The target column before any error is raised: an empty target cell comes before a bad feature
        # in the same row for the exact path, which must word the block's first error.
        # A numeric target with more distinct values than names are kept for needs no names at all.
        column = None
        if numbers is None or not self.targets.too_many_names:
            column = _target_column(buf, target_start, target_end, quoted)
            if column is None:
                return False
            if numbers is None and self.targets.numeric:
                numbers = column.numbers()
        first_row = self.rows + 2  # the header is row 1, as in a spreadsheet
        bad = ~np.isfinite(x) | (np.abs(x) > _FLOAT32_MAX)
        if bad.any():
            r, c = (int(i) for i in np.argwhere(bad)[0])
            col = feature_cols[c]
            line = block[starts[r]:ends[r]].split(b",")
            _not_finite(self.header[col], first_row + r, line[col].decode("utf-8").strip())
        self.targets.add_block(column, numbers, first_row,
                               lambda i: block[target_start[i]:target_end[i]].decode("utf-8").strip())
        if self.keep:
            self.features.append(x.astype(np.float32))
        self.rows += ends.size
        return True

    # ------------------------------------------------------------------ the exact path
    def _exact(self, block: bytes) -> None:
        """Check a block cell by cell with the csv module: the reference for what is accepted, and the
        source of every message."""
        first_line = self.line + 1
        lines = _lines(block)

        def decoded() -> Iterator[str]:
            for lineno, raw in enumerate(lines, start=first_line):
                self._check_line(raw, lineno)
                yield _decode(raw, lineno)

        reader = csv.reader(decoded(), strict=True)
        ncols, ti = len(self.header), self.ti
        features = array("d")
        cells: list[str] = []
        numbers: array[float] | None = array("d") if self.targets.numeric else None
        first_row = self.rows + 2
        consumed = 0
        while True:
            try:
                record = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                fail("file", f"The file is not valid CSV near line {first_line - 1 + reader.line_num} ({exc}). "
                     'Check for unbalanced quotes ("), and save it as comma-separated values.')
            if reader.line_num - consumed > 1:
                fail("file", f"The file is not valid CSV near line {first_line + consumed}: a quoted cell runs "
                     "over a line break; cells may not contain line breaks.")
            consumed = reader.line_num
            if not record:  # blank lines, e.g. a trailing one, carry no data
                continue
            row_number = self.rows + 2  # the header is row 1, as in a spreadsheet
            self.rows += 1
            if len(record) != ncols:
                fail("file", f"Row {row_number} has {len(record)} cells but the header has {ncols} "
                     "columns; every row needs one cell per column.")
            for i, cell in enumerate(record):
                name = self.header[i]
                cell = cell.strip()
                if not cell:
                    fail("target" if i == ti else "file",
                         f"The cell in column '{name}' at row {row_number} is empty; fill in every cell "
                         "(missing values are not supported).")
                if len(cell) > MAX_CELL_CHARS:
                    fail("file", f"The cell in column '{name}' at row {row_number} is longer than "
                         f"{MAX_CELL_CHARS} characters.")
                if i == ti:
                    cells.append(cell)
                    if numbers is not None:
                        try:
                            numbers.append(float(cell))
                        except ValueError:
                            numbers = None
                else:
                    features.append(_number(cell, name, row_number))
        self.targets.add_block(_Column.of(cells), None if numbers is None else np.frombuffer(numbers, dtype=np.float64),
                               first_row, cells.__getitem__)
        if self.keep and features:
            self.features.append(np.frombuffer(features, dtype=np.float64).reshape(-1, ncols - 1)
                                 .astype(np.float32))

    def _one_record(self, lines: list[str], lineno: int) -> list[str]:
        reader = csv.reader(lines, strict=True)
        try:
            return next(reader)
        except csv.Error as exc:
            fail("file", f"The file is not valid CSV near line {lineno} ({exc}). Check for unbalanced quotes "
                 '("), and save it as comma-separated values.')

    @staticmethod
    def _check_line(raw: bytes, lineno: int) -> None:
        if len(raw) > MAX_LINE_BYTES:
            fail("file", f"Line {lineno} is longer than {MAX_LINE_BYTES} bytes, the limit for one row.")


def _lines(block: bytes) -> list[bytes]:
    """A block's lines, each with its newline. Only a newline ends a line here, as when reading a file in
    binary: a bare carriage return stays inside its line, where the csv module refuses it."""
    lines = block.split(b"\n")
    lines.pop()
    return [line + b"\n" for line in lines]


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest


def _decode(raw: bytes, lineno: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        fail("file", f"Line {lineno} is not valid UTF-8 text. Save the file as \"CSV UTF-8\" "
             "(in Excel: Save As > CSV UTF-8).")


def _loadtxt(text: str, usecols: list[int] | None) -> np.ndarray:
    # Python's own number parser underneath (PyOS_string_to_double), whitespace stripped as str.strip
    # does; it accepts a subset of what float() does (no "1_000"), and the exact path takes the rest.
    return np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.float64, comments=None, usecols=usecols,
                      ndmin=2)


# Cells of the target column compared at once as a (rows, width) byte matrix, up to this many bytes;
# beyond (a few very wide cells among many short rows) they are compared one by one.
_MATRIX_BYTES = 4 * 1024 * 1024


def _target_column(buf: np.ndarray, start: np.ndarray, end: np.ndarray, quoted: bool) -> _Column | None:
    """The target column's cells as the csv module reads them, factorized; None for any cell only the
    exact path may judge (empty, or quotes other than around the whole cell)."""
    lengths = end - start
    width = max(int(lengths.max()), 1)
    if start.size * width <= _MATRIX_BYTES:
        padded = 8 if width <= 8 else width
        matrix = np.zeros((start.size, padded), dtype=np.uint8)
        for k in range(width):
            live = lengths > k
            matrix[live, k] = buf[start[live] + k]
        keys = matrix.view("<u8" if padded == 8 else f"S{padded}").reshape(-1)
        distinct, codes = np.unique(keys, return_inverse=True)
        raw = [d.tobytes().rstrip(b"\0") if padded == 8 else bytes(d) for d in distinct]
    else:
        index: dict[bytes, int] = {}
        data = buf.tobytes()
        codes = np.fromiter((index.setdefault(data[s:e], len(index)) for s, e in zip(start.tolist(), end.tolist())),
                            dtype=np.int64, count=start.size)
        raw = list(index)
    names: list[str] = []
    for cell in raw:
        if _QUOTE in cell:
            if not (quoted and len(cell) >= 2 and cell[:1] == cell[-1:] == _QUOTE and cell.count(_QUOTE) == 2):
                return None
            cell = cell[1:-1]
        name = cell.decode("utf-8").strip()
        if not name:
            return None
        names.append(name)
    if len(set(names)) != len(names):  # cells differing only in spaces or quotes: one name
        return _Column.of([names[c] for c in codes.reshape(-1).tolist()])
    return _Column(names, codes.reshape(-1))


def _number(cell: str, column: str, row_number: int) -> float:
    try:
        value = float(cell)
    except ValueError:
        fail("file", f"Column '{column}' must contain only numbers, but row {row_number} holds "
             f"'{cell[:40]}'. Remove or encode non-numeric columns before uploading.")
    if not math.isfinite(value) or abs(value) > _FLOAT32_MAX:
        _not_finite(column, row_number, cell)
    return value


def _not_finite(column: str, row_number: int, cell: str) -> None:
    fail("file", f"Column '{column}' at row {row_number} holds '{cell[:40]}', which is not a finite 32-bit "
         "number; remove or fill it.")


def _list_columns(header: list[str]) -> str:
    shown = ", ".join(f"'{name[:60]}'" for name in header[:_LISTED_COLUMNS])
    if len(header) > _LISTED_COLUMNS:
        shown += f" and {len(header) - _LISTED_COLUMNS} more"
    return shown


def _delimiter_hint(header: list[str]) -> str:
    if len(header) == 1 and any(sep in header[0] for sep in (";", "\t", "|")):
        return " The header looks like it uses another separator; columns must be separated by commas."
    return ""
