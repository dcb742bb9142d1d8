"""`.npz` inspection and loading, on small files generated per test."""
from __future__ import annotations

import io
import struct
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from trainyard.datasets import DatasetError, inspect_npz, load_npz

CAP = 10_000_000


def _fields(err: pytest.ExceptionInfo[DatasetError]) -> list[str]:
    return [e["field"] for e in err.value.errors]


def _save(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def _npy_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def test_train_only_classification(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = _save(tmp_path / "d.npz", x_train=rng.random((20, 4), dtype=np.float32),
                 y_train=np.arange(20) % 3)
    summary = inspect_npz(path, max_decompressed_bytes=CAP)
    assert summary.to_dict() == {
        "format": "npz", "splits": {"train": 20, "val": None, "test": None}, "input_shape": [4],
        "x_dtype": "float32", "y_dtype": "int64", "target_shape": [], "task": "classification",
        "n_classes": 3, "class_names": None, "feature_names": None,
    }
    data = load_npz(path)
    assert data["x_train"].shape == (20, 4) and data["y_train"].tolist() == (np.arange(20) % 3).tolist()
    assert all(data[k] is None for k in ("x_val", "y_val", "x_test", "y_test"))


def test_all_splits_images_regression(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    path = _save(tmp_path / "d.npz",
                 x_train=rng.random((10, 8, 8, 1)), y_train=rng.random(10),
                 x_val=rng.random((4, 8, 8, 1)), y_val=rng.random(4),
                 x_test=rng.random((3, 8, 8, 1)), y_test=rng.random(3))
    summary = inspect_npz(path, max_decompressed_bytes=CAP)
    assert summary.splits == {"train": 10, "val": 4, "test": 3}
    assert summary.input_shape == [8, 8, 1] and summary.target_shape == []
    assert summary.task == "regression" and summary.n_classes is None
    data = load_npz(path, max_decompressed_bytes=CAP)
    assert data["x_test"].shape == (3, 8, 8, 1) and data["y_val"].shape == (4,)


def test_one_hot_labels_and_label_only_in_test(tmp_path: Path) -> None:
    eye = np.eye(5, dtype=np.float32)
    path = _save(tmp_path / "d.npz", x_train=np.ones((5, 2)), y_train=eye[[0, 1, 2, 0, 1]],
                 x_test=np.ones((2, 2)), y_test=eye[[4, 3]])
    summary = inspect_npz(path, max_decompressed_bytes=CAP)
    assert (summary.task, summary.n_classes, summary.target_shape) == ("classification", 5, [5])

    sparse = _save(tmp_path / "s.npz", x_train=np.ones((3, 2)), y_train=np.array([0, 1, 1]),
                   x_test=np.ones((1, 2)), y_test=np.array([6]))
    assert inspect_npz(sparse, max_decompressed_bytes=CAP).n_classes == 7


def test_missing_y_train(tmp_path: Path) -> None:
    path = _save(tmp_path / "d.npz", x_train=np.ones((3, 2)))
    with pytest.raises(DatasetError) as err:
        inspect_npz(path, max_decompressed_bytes=CAP)
    assert _fields(err) == ["file:y_train"]
    assert "no y_train" in err.value.detail


def test_unpaired_validation_split(tmp_path: Path) -> None:
    path = _save(tmp_path / "d.npz", x_train=np.ones((3, 2)), y_train=np.zeros(3), x_val=np.ones((1, 2)))
    with pytest.raises(DatasetError) as err:
        inspect_npz(path, max_decompressed_bytes=CAP)
    assert _fields(err) == ["file:y_val"]
    assert "x_val but no y_val" in err.value.detail


def test_unequal_lengths(tmp_path: Path) -> None:
    path = _save(tmp_path / "d.npz", x_train=np.ones((5, 2)), y_train=np.zeros(4))
    with pytest.raises(DatasetError) as err:
        inspect_npz(path, max_decompressed_bytes=CAP)
    assert _fields(err) == ["file:y_train"]
    assert "x_train has 5 samples but y_train has 4" in err.value.detail


def test_per_sample_shapes_must_match_across_splits(tmp_path: Path) -> None:
    path = _save(tmp_path / "d.npz", x_train=np.ones((5, 3)), y_train=np.zeros(5),
                 x_test=np.ones((2, 4)), y_test=np.zeros(2))
    with pytest.raises(DatasetError) as err:
        inspect_npz(path, max_decompressed_bytes=CAP)
    assert _fields(err) == ["file:x_test"]
    assert "[4]" in err.value.detail and "[3]" in err.value.detail


def test_one_dimensional_x_refused(tmp_path: Path) -> None:
    path = _save(tmp_path / "d.npz", x_train=np.ones(5), y_train=np.zeros(5))
    with pytest.raises(DatasetError) as err:
        inspect_npz(path, max_decompressed_bytes=CAP)
    assert "reshape(-1, 1)" in err.value.detail


def test_empty_train_refused(tmp_path: Path) -> None:
    path = _save(tmp_path / "d.npz", x_train=np.ones((0, 2)), y_train=np.zeros(0))
    with pytest.raises(DatasetError) as err:
        inspect_npz(path, max_decompressed_bytes=CAP)
    assert "no samples" in err.value.detail


# Unpickling an instance of this class would call _unpickled, leaving a marker file behind.
class _Trap:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (_unpickled, (self.marker,))


def _unpickled(marker: str) -> None:
    Path(marker).write_text("unpickled")


def test_object_array_refused_without_unpickling(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "d.npz"
    np.savez(path, x_train=np.array([[_Trap(str(marker))]], dtype=object), y_train=np.zeros(1))
    for call in (lambda: inspect_npz(path, max_decompressed_bytes=CAP), lambda: load_npz(path)):
        with pytest.raises(DatasetError) as err:
            call()
        assert _fields(err) == ["file:x_train"]
        assert "dtype=object" in err.value.detail
    assert not marker.exists()


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_values(tmp_path: Path, bad: float) -> None:
    x = np.ones((4, 2))
    x[2, 1] = bad
    path = _save(tmp_path / "d.npz", x_train=x, y_train=np.zeros(4))
    with pytest.raises(DatasetError) as err:
        inspect_npz(path, max_decompressed_bytes=CAP)
    assert _fields(err) == ["file:x_train"]
    assert "NaN or infinite" in err.value.detail and "sample 2" in err.value.detail


@pytest.mark.parametrize("arr, dtype_text", [
    (np.ones((2, 2), dtype=np.complex64), "complex64"),
    (np.array([["a", "b"], ["c", "d"]]), "<U1"),
    (np.zeros((2, 2), dtype="datetime64[s]"), "datetime64"),
])
def test_non_numeric_dtypes(tmp_path: Path, arr: np.ndarray, dtype_text: str) -> None:
    path = _save(tmp_path / "d.npz", x_train=arr, y_train=np.zeros(2))
    with pytest.raises(DatasetError) as err:
        inspect_npz(path, max_decompressed_bytes=CAP)
    assert dtype_text in err.value.detail and "only bool, integer and float" in err.value.detail


def test_unknown_member(tmp_path: Path) -> None:
    path = _save(tmp_path / "d.npz", x_train=np.ones((3, 2)), y_train=np.zeros(3), weights=np.ones(3))
    with pytest.raises(DatasetError) as err:
        inspect_npz(path, max_decompressed_bytes=CAP)
    assert _fields(err) == ["file"]
    assert "'weights.npy'" in err.value.detail and "x_train, y_train" in err.value.detail


def test_duplicate_member(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    with zipfile.ZipFile(path, "w") as zf, pytest.warns(UserWarning, match="Duplicate"):
        zf.writestr("x_train.npy", _npy_bytes(np.ones((2, 2))))
        zf.writestr("y_train.npy", _npy_bytes(np.zeros(2)))
        zf.writestr("y_train.npy", _npy_bytes(np.zeros(2)))
    with pytest.raises(DatasetError) as err:
        inspect_npz(path, max_decompressed_bytes=CAP)
    assert "y_train twice" in err.value.detail


def test_zip_bomb_refused_before_inflating(tmp_path: Path) -> None:
    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, x_train=np.zeros((50_000_000 // 8 // 10, 10)), y_train=np.zeros(625_000))
    assert path.stat().st_size < 1_000_000  # small on disk, 55 MB unpacked
    start = time.perf_counter()
    with pytest.raises(DatasetError) as err:
        inspect_npz(path, max_decompressed_bytes=1_000_000)
    assert time.perf_counter() - start < 0.5
    assert _fields(err) == ["file"]
    assert "unpacks to 55.0 MB, more than the limit of 1.0 MB" in err.value.detail


def _set_declared_size(path: Path, member: str, size: int) -> None:
    """Rewrite a member's uncompressed size in the central directory, as an attacker could."""
    data = bytearray(path.read_bytes())
    name = member.encode()
    pos = data.find(b"PK\x01\x02")
    while pos != -1:
        name_len = struct.unpack_from("<H", data, pos + 28)[0]
        if data[pos + 46:pos + 46 + name_len] == name:
            struct.pack_into("<I", data, pos + 24, size)
        pos = data.find(b"PK\x01\x02", pos + 4)
    path.write_bytes(bytes(data))


def test_lying_zip_size_is_refused_without_inflating(tmp_path: Path) -> None:
    path = tmp_path / "liar.npz"
    np.savez_compressed(path, x_train=np.zeros((1_000_000, 10)), y_train=np.zeros(1_000_000))
    _set_declared_size(path, "x_train.npy", 100_000)  # really 80 MB
    start = time.perf_counter()
    with pytest.raises(DatasetError) as err:
        inspect_npz(path, max_decompressed_bytes=1_000_000)
    assert "unpacks to 8.1 MB" in err.value.detail  # y_train's honest 8 MB is over the cap
    _set_declared_size(path, "y_train.npy", 1_000)
    with pytest.raises(DatasetError) as err:
        inspect_npz(path, max_decompressed_bytes=1_000_000)
    assert _fields(err) == ["file:x_train"]
    assert "header describes 80000000 bytes" in err.value.detail
    _set_declared_size(path, "x_train.npy", 100)  # so small that zipfile's own bound trips in the header
    with pytest.raises(DatasetError) as err:
        inspect_npz(path, max_decompressed_bytes=1_000_000)
    assert _fields(err) == ["file:x_train"] and "damaged" in err.value.detail
    assert time.perf_counter() - start < 1.0  # nothing was inflated


def test_lying_npy_header_is_refused_before_allocating(tmp_path: Path) -> None:
    # A well-formed .npy header that claims 32 TB of float64 followed by 16 bytes of data.
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f8", "fortran_order": False,
                                               "shape": (10**12, 4)})
    header = buf.getvalue()
    path = tmp_path / "d.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("x_train.npy", header + b"\0" * 16)
        zf.writestr("y_train.npy", _npy_bytes(np.zeros(2)))
    for call in (lambda: inspect_npz(path, max_decompressed_bytes=CAP), lambda: load_npz(path)):
        with pytest.raises(DatasetError) as err:
            call()
        assert _fields(err) == ["file:x_train"] and "damaged" in err.value.detail


def test_member_that_is_not_npy(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("x_train.npy", b"hello, world")
        zf.writestr("y_train.npy", _npy_bytes(np.zeros(2)))
    with pytest.raises(DatasetError) as err:
        inspect_npz(path, max_decompressed_bytes=CAP)
    assert _fields(err) == ["file:x_train"] and "not a valid NumPy array" in err.value.detail


@pytest.mark.parametrize("content", [b"", b"x_train,y_train\n1,2\n", b"PK\x03\x04 truncated"])
def test_not_a_zip(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "d.npz"
    path.write_bytes(content)
    with pytest.raises(DatasetError) as err:
        inspect_npz(path, max_decompressed_bytes=CAP)
    assert _fields(err) == ["file"] and "numpy.savez" in err.value.detail


def test_plain_npy_is_not_an_npz(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    path.write_bytes(_npy_bytes(np.ones((2, 2))))
    with pytest.raises(DatasetError) as err:
        load_npz(path)
    assert "not a valid .npz" in err.value.detail


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as err:
        inspect_npz(tmp_path / "gone.npz", max_decompressed_bytes=CAP)
    assert "upload it again" in err.value.detail


@pytest.mark.parametrize("save, order", [(np.savez, "C"), (np.savez_compressed, "C"), (np.savez, "F")])
def test_non_finite_value_found_in_a_later_scan_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      save, order: str) -> None:
    # Feature arrays are scanned block by block from the archive; a NaN far past the first block is
    # found and named by its sample, whatever the compression or memory order.
    monkeypatch.setattr("trainyard.datasets.npz.SCAN_BLOCK_BYTES", 64)
    x = np.asarray(np.ones((1000, 3), dtype=np.float32), order=order)
    x[777, 1] = np.nan
    path = tmp_path / "d.npz"
    save(path, x_train=x, y_train=np.zeros(1000))
    with pytest.raises(DatasetError) as err:
        inspect_npz(path, max_decompressed_bytes=CAP)
    assert _fields(err) == ["file:x_train"]
    assert "sample 777" in err.value.detail


def test_inspect_does_not_load_the_features_into_memory(tmp_path: Path) -> None:
    import tracemalloc

    x = np.ones((125_000, 64), dtype=np.float32)  # 32 MB
    path = _save(tmp_path / "d.npz", x_train=x, y_train=np.zeros(125_000, dtype=np.int8))
    del x
    tracemalloc.start()
    try:
        summary = inspect_npz(path, max_decompressed_bytes=10**9)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert summary.splits["train"] == 125_000 and summary.input_shape == [64]
    assert peak < 12 * 1024 * 1024, f"inspecting a 32 MB upload peaked at {peak / 1e6:.1f} MB"
