"""Validating and loading CSV uploads: a header row, numeric feature columns and one target column.

Parsing is streaming and bounded: the file size is capped before anything is read, lines are decoded one
at a time (so a bad byte is reported with its line), the number of columns and the length of each cell
are capped, and features are accumulated in a flat `array('d')` (8 bytes a cell) rather than Python
lists of floats (about 32 bytes a cell).
"""
from __future__ import annotations

import csv
import logging
import math
import os
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from service.datasets.errors import fail
from service.datasets.summary import MAX_DISTINCT_FOR_CLASSIFICATION, DatasetSummary

logger = logging.getLogger(__name__)

# No number or class name needs more; also keeps us independent of csv.field_size_limit(), which is
# process-wide state we should not change from a library.
MAX_CELL_CHARS = 1_000
# A string target with more distinct values than this is almost always an id or free-text column
# chosen by mistake, and its class list would not fit in a readable summary.
MAX_CLASS_NAMES = 1_000
# Columns listed in the "target not found" message before it is cut short.
_LISTED_COLUMNS = 20
_FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass
class _Parsed:
    feature_names: list[str]
    x: np.ndarray  # float32, (rows, features)
    y: np.ndarray  # int64 for classification, float32 for regression
    task: str
    n_classes: int | None
    class_names: list[str] | None


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

    A CSV has only a training split; validation comes from the job's `validation_split`.
    """
    parsed = _parse(Path(path), target, max_bytes, max_columns)
    return DatasetSummary(
        format="csv",
        splits={"train": int(parsed.x.shape[0]), "val": None, "test": None},
        input_shape=[int(parsed.x.shape[1])],
        x_dtype=str(parsed.x.dtype),
        y_dtype=str(parsed.y.dtype),
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
    parsed = _parse(Path(path), target, max_bytes, max_columns)
    return {"x_train": parsed.x, "y_train": parsed.y, "x_val": None, "y_val": None, "x_test": None,
            "y_test": None}


def _parse(path: Path, target: str, max_bytes: int | None, max_columns: int) -> _Parsed:
    try:
        size = path.stat().st_size
        fh = path.open("rb")
    except FileNotFoundError:
        fail("file", "The uploaded file is missing on the server; upload it again.")
    except OSError as exc:
        fail("file", f"The file could not be opened ({exc.strerror or exc}).")
    with fh:
        if max_bytes is not None and size > max_bytes:
            fail("file", f"The file is {size} bytes, more than the limit of {max_bytes}. Upload a smaller "
                 "data set.")
        reader = csv.reader(_decoded_lines(fh, max_bytes), strict=True)
        try:
            return _parse_rows(reader, target, max_columns)
        except csv.Error as exc:
            fail("file", f"The file is not valid CSV near line {reader.line_num} ({exc}). Check for "
                 'unbalanced quotes ("), and save it as comma-separated values.')


def _decoded_lines(fh: BinaryIO, max_bytes: int | None) -> Iterator[str]:
    """Yield the file's lines as text, raising a user-facing error on the first invalid UTF-8 line."""
    read = 0
    for lineno, raw in enumerate(fh, start=1):
        read += len(raw)
        if max_bytes is not None and read > max_bytes:  # the file grew after the size check
            fail("file", f"The file is larger than the limit of {max_bytes} bytes.")
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            fail("file", f"Line {lineno} is not valid UTF-8 text. Save the file as \"CSV UTF-8\" "
                 "(in Excel: Save As > CSV UTF-8).")
        if lineno == 1:
            line = line.removeprefix("\ufeff")  # the byte-order mark Excel writes
        yield line


def _parse_rows(reader: Iterator[list[str]], target: str, max_columns: int) -> _Parsed:
    header = _read_header(reader, max_columns)
    if target not in header:
        fail("target", f"There is no column named '{target}'. The columns are: {_list_columns(header)}."
             + _delimiter_hint(header))
    if len(header) < 2:
        fail("file", f"The file has only the target column '{target}'; at least one feature column is "
             "needed.")
    target_index = header.index(target)
    feature_names = [name for i, name in enumerate(header) if i != target_index]
    features = array("d")
    targets: list[str] = []
    rows = 0
    for record in reader:
        if not record:  # blank lines, e.g. a trailing one, carry no data
            continue
        rows += 1
        row_number = rows + 1  # the header is row 1, as in a spreadsheet
        if len(record) != len(header):
            fail("file", f"Row {row_number} has {len(record)} cells but the header has {len(header)} "
                 "columns; every row needs one cell per column.")
        for i, cell in enumerate(record):
            name = header[i]
            cell = cell.strip()
            if not cell:
                fail("target" if i == target_index else "file",
                     f"The cell in column '{name}' at row {row_number} is empty; fill in every cell "
                     "(missing values are not supported).")
            if len(cell) > MAX_CELL_CHARS:
                fail("file", f"The cell in column '{name}' at row {row_number} is longer than "
                     f"{MAX_CELL_CHARS} characters.")
            if i == target_index:
                targets.append(cell)
            else:
                features.append(_number(cell, name, row_number))
    if rows == 0:
        fail("file", "The file has a header row but no data rows.")
    x = np.frombuffer(features, dtype=np.float64).reshape(rows, len(feature_names)).astype(np.float32)
    y, task, n_classes, class_names = _encode_target(targets, target)
    return _Parsed(feature_names, x, y, task, n_classes, class_names)


def _read_header(reader: Iterator[list[str]], max_columns: int) -> list[str]:
    for record in reader:
        if record:
            break
    else:
        fail("file", "The file is empty; it needs a header row followed by one row per sample.")
    if len(record) > max_columns:
        fail("file", f"The file has {len(record)} columns, more than the limit of {max_columns}.")
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
    return header


def _number(cell: str, column: str, row_number: int) -> float:
    try:
        value = float(cell)
    except ValueError:
        fail("file", f"Column '{column}' must contain only numbers, but row {row_number} holds "
             f"'{cell[:40]}'. Remove or encode non-numeric columns before uploading.")
    if not math.isfinite(value) or abs(value) > _FLOAT32_MAX:
        fail("file", f"Column '{column}' at row {row_number} holds '{cell[:40]}', which is not a finite "
             "32-bit number; remove or fill it.")
    return value


def _encode_target(cells: list[str], column: str) -> tuple[np.ndarray, str, int | None, list[str] | None]:
    numbers: list[float] = []
    for cell in cells:
        try:
            numbers.append(float(cell))
        except ValueError:
            break
    else:
        values = np.asarray(numbers, dtype=np.float64)
        if not np.all(np.isfinite(values)) or np.any(np.abs(values) > _FLOAT32_MAX):
            row = int(np.argwhere(~np.isfinite(values) | (np.abs(values) > _FLOAT32_MAX))[0][0]) + 2
            fail("target", f"The target column '{column}' at row {row} holds '{cells[row - 2][:40]}', which "
                 "is not a finite number.")
        if np.all(values >= 0) and np.all(values == np.floor(values)):
            distinct = np.unique(values)
            if distinct.size <= MAX_DISTINCT_FOR_CLASSIFICATION:
                return values.astype(np.int64), "classification", int(distinct[-1]) + 1, None
        return values.astype(np.float32), "regression", None, None
    class_names = sorted(set(cells))
    if len(class_names) > MAX_CLASS_NAMES:
        fail("target", f"The target column '{column}' has {len(class_names)} different text values, more "
             f"than the limit of {MAX_CLASS_NAMES} classes; is it the right column?")
    index = {name: i for i, name in enumerate(class_names)}
    y = np.fromiter((index[c] for c in cells), dtype=np.int64, count=len(cells))
    return y, "classification", len(class_names), class_names


def _list_columns(header: list[str]) -> str:
    shown = ", ".join(f"'{name[:60]}'" for name in header[:_LISTED_COLUMNS])
    if len(header) > _LISTED_COLUMNS:
        shown += f" and {len(header) - _LISTED_COLUMNS} more"
    return shown


def _delimiter_hint(header: list[str]) -> str:
    if len(header) == 1 and any(sep in header[0] for sep in (";", "\t", "|")):
        return " The header looks like it uses another separator; columns must be separated by commas."
    return ""
