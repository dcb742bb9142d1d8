"""CSV inspection and loading, on small files generated per test."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from trainyard.datasets import DatasetError, inspect_csv, load_csv

CAP = 1_000_000


def _write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "data.csv"
    if isinstance(text, str):
        text = text.encode("utf-8")
    path.write_bytes(text)
    return path


def _refused(path: Path, target: str = "y", **kwargs: int) -> DatasetError:
    max_bytes = kwargs.pop("max_bytes", CAP)
    with pytest.raises(DatasetError) as err:
        inspect_csv(path, target=target, max_bytes=max_bytes, **kwargs)
    # load_csv runs the same checks and must refuse the same way.
    with pytest.raises(DatasetError) as again:
        load_csv(path, target, max_bytes=max_bytes, **kwargs)
    assert again.value.errors == err.value.errors
    return err.value


def test_numeric_classification(tmp_path: Path) -> None:
    path = _write(tmp_path, "a,b,y\n1,2.5,0\n3,-4e2,2\n 5 , 6 ,1\n\n")
    summary = inspect_csv(path, target="y", max_bytes=CAP)
    assert summary.to_dict() == {
        "format": "csv", "splits": {"train": 3, "val": None, "test": None}, "input_shape": [2],
        "x_dtype": "float32", "y_dtype": "int64", "target_shape": [], "task": "classification",
        "n_classes": 3, "class_names": None, "feature_names": ["a", "b"],
    }
    data = load_csv(path, "y")
    np.testing.assert_array_equal(data["x_train"], np.array([[1, 2.5], [3, -400], [5, 6]], dtype=np.float32))
    assert data["x_train"].dtype == np.float32
    assert data["y_train"].dtype == np.int64 and data["y_train"].tolist() == [0, 2, 1]
    assert all(data[k] is None for k in ("x_val", "y_val", "x_test", "y_test"))


def test_numeric_regression_target_in_the_middle(tmp_path: Path) -> None:
    path = _write(tmp_path, "\ufeffa,price,b\n1,10.5,2\n3,20,4\n")  # with the BOM Excel writes
    summary = inspect_csv(path, target="price", max_bytes=CAP)
    assert (summary.task, summary.n_classes, summary.feature_names) == ("regression", None, ["a", "b"])
    data = load_csv(path, "price")
    assert data["y_train"].dtype == np.float32 and data["y_train"].tolist() == [10.5, 20.0]
    assert data["x_train"].tolist() == [[1, 2], [3, 4]]


def test_many_distinct_integers_are_regression(tmp_path: Path) -> None:
    rows = "\n".join(f"{i},{i * 3}" for i in range(51))
    summary = inspect_csv(_write(tmp_path, "a,y\n" + rows + "\n"), target="y", max_bytes=CAP)
    assert summary.task == "regression" and summary.y_dtype == "float32"


def test_string_target(tmp_path: Path) -> None:
    path = _write(tmp_path, 'x1,x2,species\n1,2,versicolor\n3,4,setosa\n5,6,"virginica"\n7,8,setosa\n')
    summary = inspect_csv(path, target="species", max_bytes=CAP)
    assert summary.task == "classification" and summary.n_classes == 3
    assert summary.class_names == ["setosa", "versicolor", "virginica"]
    assert summary.y_dtype == "int64"
    assert load_csv(path, "species")["y_train"].tolist() == [1, 0, 2, 0]


def test_missing_target_column(tmp_path: Path) -> None:
    err = _refused(_write(tmp_path, "a,b,c\n1,2,3\n"), target="label")
    assert err.errors[0]["field"] == "target"
    assert "no column named 'label'" in err.detail and "'a', 'b', 'c'" in err.detail


def test_missing_target_lists_columns_truncated(tmp_path: Path) -> None:
    header = ",".join(f"c{i}" for i in range(30))
    err = _refused(_write(tmp_path, header + "\n" + ",".join("1" * 30) + "\n"), target="label")
    assert "'c19'" in err.detail and "'c20'" not in err.detail and "and 10 more" in err.detail


def test_semicolon_separated_gets_a_hint(tmp_path: Path) -> None:
    err = _refused(_write(tmp_path, "a;b;y\n1;2;3\n"))
    assert "separated by commas" in err.detail


def test_non_number_cell_names_column_and_row(tmp_path: Path) -> None:
    err = _refused(_write(tmp_path, "a,colour,y\n1,2,0\n3,4,1\n5,red,1\n"))
    assert err.errors[0]["field"] == "file"
    assert "Column 'colour'" in err.detail and "row 4" in err.detail and "'red'" in err.detail


@pytest.mark.parametrize("cell", ["nan", "inf", "-Infinity", "1e39"])
def test_non_finite_cell(tmp_path: Path, cell: str) -> None:
    err = _refused(_write(tmp_path, f"a,y\n1,0\n{cell},1\n"))
    assert "Column 'a' at row 3" in err.detail and "not a finite" in err.detail


def test_empty_cell(tmp_path: Path) -> None:
    err = _refused(_write(tmp_path, "a,b,y\n1,2,0\n3,,1\n"))
    assert "column 'b' at row 3 is empty" in err.detail


def test_empty_target_cell(tmp_path: Path) -> None:
    err = _refused(_write(tmp_path, "a,y\n1,0\n2, \n"))
    assert err.errors[0]["field"] == "target" and "column 'y' at row 3 is empty" in err.detail


def test_ragged_row(tmp_path: Path) -> None:
    err = _refused(_write(tmp_path, "a,b,y\n1,2,0\n3,4\n"))
    assert "Row 3 has 2 cells but the header has 3 columns" in err.detail


def test_non_utf8_bytes(tmp_path: Path) -> None:
    err = _refused(_write(tmp_path, "a,y\n1,0\n".encode() + "2,caf\u00e9\n".encode("latin-1")))
    assert err.errors[0]["field"] == "file"
    assert "Line 3 is not valid UTF-8" in err.detail


def test_too_big(tmp_path: Path) -> None:
    err = _refused(_write(tmp_path, "a,y\n" + "1,0\n" * 100), max_bytes=50)
    assert "more than the limit of 50" in err.detail


def test_too_many_columns(tmp_path: Path) -> None:
    err = _refused(_write(tmp_path, "a,b,c,y\n1,2,3,0\n"), max_columns=3)
    assert "4 columns, more than the limit of 3" in err.detail


def test_overlong_cell(tmp_path: Path) -> None:
    err = _refused(_write(tmp_path, "a,y\n" + "1" * 5_000 + ",0\n"))
    assert "longer than 1000 characters" in err.detail


@pytest.mark.parametrize("text, message", [
    ("", "The file is empty"),
    ("a,y\n", "no data rows"),
    ("y\n1\n", "at least one feature column"),
    ("a,a,y\n1,2,3\n", "Two columns are named 'a'"),
    ("a,,y\n1,2,3\n", "Column 2 has no name"),
    ('a,y\n"1,0\n2,1\n', "not valid CSV"),
])
def test_malformed_files(tmp_path: Path, text: str, message: str) -> None:
    assert message in _refused(_write(tmp_path, text)).detail


def test_missing_file(tmp_path: Path) -> None:
    assert "upload it again" in _refused(tmp_path / "gone.csv").detail
