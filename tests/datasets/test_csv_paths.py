"""The CSV checker's two paths accept exactly the same files with the same values and the same errors.

`trainyard/datasets/tabular.py` checks most blocks with array operations (the fast path) and hands any
block it declines to the csv module, cell by cell (the exact path). Generated files full of the cells
that tell them apart (spaces, quotes, CRLF, blank lines, NaN, underscores, non-ASCII digits, ragged rows)
are parsed both ways, in tiny blocks so that paths alternate within one file, and must agree.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trainyard.datasets import DatasetError
from trainyard.datasets import tabular

CELLS = ["0", "1", "2", " 3 ", "-4.5", "1e3", "6.25\t", "1_0", "nan", "inf", "1e39", "", " ", '"7"', '"a,b"',
         '"x""y"', "x", "setosa", " versicolor ", '"virginica"', '" q "', "caf\u00e9", "\u0661", "\u00a05",
         "a\rb", "\x1c8", "9\x00", "0x10", '5 inch"', "#2"]


def _outcome(path: Path, target: str, **kwargs: Any) -> Any:
    try:
        parsed = tabular._parse(path, target, 10**7, 10_000, **kwargs)
    except DatasetError as err:
        return ("refused", err.errors)
    return ("accepted", parsed.feature_names, parsed.rows, parsed.y_dtype, parsed.task, parsed.n_classes,
            parsed.class_names, None if parsed.x is None else parsed.x.tobytes(),
            None if parsed.y is None else (parsed.y.dtype.str, parsed.y.tobytes()))


# Mostly plain numbers, so that blocks the fast path takes hold the odd cell that tells the paths apart.
PLAIN = st.sampled_from(["0", "1", "2", "3", "-4.5", "1e3"])
cell = st.one_of(PLAIN, PLAIN, PLAIN, st.sampled_from(CELLS))
rows = st.lists(st.lists(cell, min_size=2, max_size=4), min_size=1, max_size=30)


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(rows=rows, ncols=st.integers(2, 3), target=st.integers(0, 2), newline=st.sampled_from(["\n", "\r\n"]),
       blank=st.booleans(), numeric_rows=st.integers(0, 40), block=st.sampled_from([16, 64, 1 << 20]))
def test_fast_and_exact_paths_agree(tmp_path_factory: pytest.TempPathFactory, rows: list[list[str]], ncols: int,
                                    target: int, newline: str, blank: bool, numeric_rows: int, block: int) -> None:
    header = ["a", "b", "y"][:ncols]
    target_name = header[min(target, ncols - 1)]
    # Mostly well-formed numeric rows (what the fast path takes), with the generated ones among them.
    rng = np.random.default_rng(numeric_rows)
    lines = [",".join(header)]
    lines += [",".join(str(v) for v in rng.integers(0, 3, size=ncols)) for _ in range(numeric_rows)]
    lines += [",".join(r[:ncols] if len(r) != 4 else r) for r in rows]
    if blank:
        lines.insert(len(lines) // 2, "")
    path = tmp_path_factory.mktemp("csv") / "d.csv"
    path.write_bytes((newline.join(lines) + newline).encode("utf-8"))
    for keep in (False, True):
        exact = _outcome(path, target_name, keep=keep, fast=False, block_bytes=block)
        fast = _outcome(path, target_name, keep=keep, fast=True, block_bytes=block)
        assert fast == exact


@pytest.mark.parametrize("text, target", [
    ("y,a\n1,2\n,inf\n", "y"),  # an empty target before a bad feature in the same row
    ("a,y\ninf,\n", "y"),  # a bad feature before an empty target
    ("a,y\n1,nan\n2,x\n", "y"),  # NaN is a class name once a text label shows up
    ("a,y\n1,nan\n2,3\n", "y"),  # ...and an error while every label is a number
    ('a,y\n1,"p"\n2, "p"\n', "y"),  # a space before the quote keeps the quotes in the cell
    ("a,y\n1,\u0661\n2,1_0\n", "y"),  # numbers Python reads and numpy does not
])
def test_tricky_files_agree(tmp_path: Path, text: str, target: str) -> None:
    path = _write(tmp_path, text)
    for keep in (False, True):
        assert _outcome(path, target, keep=keep, fast=True) == _outcome(path, target, keep=keep, fast=False)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "d.csv"
    path.write_bytes(text.encode("utf-8"))
    return path


@pytest.mark.parametrize("text, target", [
    ("a,b,y\n" + "".join(f"{i},{i * 0.5},{i % 3}\n" for i in range(2000)), "y"),
    ("a,b,species\r\n" + "".join(f'{i},{i * 0.5},"{["setosa", "versicolor"][i % 2]}"\r\n' for i in range(2000)),
     "species"),
    ("price,a\n" + "".join(f"{i * 1.5},{i}\n" for i in range(2000)), "price"),
])
def test_ordinary_files_take_the_fast_path(tmp_path: Path, text: str, target: str) -> None:
    path = _write(tmp_path, text)
    fast = tabular._parse(path, target, 10**7, 10_000, keep=True, block_bytes=4096)
    exact = tabular._parse(path, target, 10**7, 10_000, keep=True, fast=False, block_bytes=4096)
    assert fast.fast_blocks >= 5 and exact.fast_blocks == 0
    assert (fast.task, fast.n_classes, fast.class_names) == (exact.task, exact.n_classes, exact.class_names)
    assert np.array_equal(fast.x, exact.x) and np.array_equal(fast.y, exact.y) and fast.y.dtype == exact.y.dtype
