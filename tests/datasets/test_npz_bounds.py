"""`.npz` uploads that declare more than they hold: impossible shapes are a 422 naming the member, and
everything else is checked in bounded memory, block by block, whatever the archive declares."""
from __future__ import annotations

import io
import time
import tracemalloc
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from trainyard.datasets import DatasetError, infer_task, inspect_npz, load_npz
from trainyard.datasets.npz import MAX_CENTRAL_DIRECTORY_BYTES

CAP = 2 * 1024**3


def npy_header(shape: Any, descr: str = "<f4", fortran: bool = False) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": fortran, "shape": shape})
    return buf.getvalue()


def write_members(path: Path, members: dict[str, tuple[Any, str, bytes]],
                  compression: int = zipfile.ZIP_DEFLATED) -> Path:
    """An archive of raw `.npy` members: name -> (shape in the header, descr, data bytes)."""
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, (shape, descr, data) in members.items():
            zf.writestr(name + ".npy", npy_header(shape, descr) + data)
    return path


def zeros_member(zf: zipfile.ZipFile, name: str, shape: tuple[int, ...], descr: str, fortran: bool = False,
                 value: bytes = b"\0") -> None:
    """A member of `prod(shape)` items of one repeated byte, deflated as it is written (nothing held)."""
    info = zipfile.ZipInfo(name + ".npy")
    info.compress_type = zipfile.ZIP_DEFLATED
    left = int(np.prod(shape, dtype=object)) * np.dtype(descr).itemsize
    chunk = value * (4 << 20)
    with zf.open(info, "w", force_zip64=True) as fp:
        fp.write(npy_header(shape, descr, fortran))
        while left:
            fp.write(chunk[:min(left, len(chunk))])
            left -= min(left, len(chunk))


def refused(path: Path) -> DatasetError:
    with pytest.raises(DatasetError) as err:
        inspect_npz(path, max_decompressed_bytes=CAP)
    with pytest.raises(DatasetError) as again:  # the worker's loader refuses it the same way
        load_npz(path)
    assert again.value.errors == err.value.errors
    return err.value


@pytest.mark.parametrize("x_shape, y_shape, member, words", [
    ((-2, -3), (-2, -3), "file:x_train", "negative dimension"),  # dims whose product is positive
    ((4, 2), (-4,), "file:y_train", "negative dimension"),
    ((5, 0), (5,), "file:x_train", "dimension of size 0"),
    ((5, 2), (5, 0), "file:y_train", "dimension of size 0"),
    ((2**62, 2**62, 0), (2**62, 0), "file:x_train", "dimension of size 0"),  # product 0: "empty" but huge
    ((True, 2), (1,), "file:x_train", "not a list of whole numbers"),
    ((2**64, 2**64), (2**64,), "file:x_train", "header describes"),  # product far past any real size
    ((1,) * 40, (1,), "file:x_train", "40 dimensions"),
    ((3, 2), (4,), "file:y_train", "x_train has 3 samples but y_train has 4"),
])
def test_impossible_shapes_are_refused_naming_the_member(tmp_path: Path, x_shape: Any, y_shape: Any,
                                                          member: str, words: str) -> None:
    def data(shape: Any) -> bytes:
        n = int(np.prod(shape, dtype=object)) if all(type(d) is int and d >= 0 for d in shape) else 0
        return b"\0" * (4 * n if 0 <= n < 100 else 0)

    path = write_members(tmp_path / "d.npz", {"x_train": (x_shape, "<f4", data(x_shape)),
                                               "y_train": (y_shape, "<f4", data(y_shape))})
    err = refused(path)
    assert [e["field"] for e in err.errors] == [member], err.errors
    assert words in err.detail


def test_validation_split_lengths_must_match(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, x_train=np.ones((3, 2)), y_train=np.zeros(3), x_val=np.ones((2, 2)), y_val=np.zeros(5))
    err = refused(path)
    assert [e["field"] for e in err.errors] == ["file:y_val"] and "x_val has 2 samples" in err.detail


@pytest.mark.parametrize("compression", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA])
def test_only_stored_and_deflate_members(tmp_path: Path, compression: int) -> None:
    # zipfile inflates these a whole compressed read at a time: 700 bytes of bzip2 hold 200 MB of zeros.
    path = write_members(tmp_path / "d.npz", {"x_train": ((4, 1), "<f4", b"\0" * 16),
                                               "y_train": ((4,), "<f4", b"\0" * 16)}, compression)
    err = refused(path)
    assert {e["field"] for e in err.errors} == {"file:x_train", "file:y_train"}
    assert "only stored and deflate" in err.detail


def test_a_huge_central_directory_is_refused_before_zipfile_reads_it(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(3000):
            zf.writestr(f"m{i}", b"")
    assert path.stat().st_size > MAX_CENTRAL_DIRECTORY_BYTES
    err = refused(path)
    assert [e["field"] for e in err.errors] == ["file"] and "3000 members" in err.detail


def test_many_unknown_members_are_listed_briefly(tmp_path: Path) -> None:
    arrays = {f"extra{i}": np.zeros(1) for i in range(30)}
    path = tmp_path / "d.npz"
    np.savez(path, x_train=np.ones((2, 2)), y_train=np.zeros(2), **arrays)
    err = refused(path)
    assert len(err.errors) == 11 and "20 more members" in err.errors[-1]["message"]


def test_inspect_holds_a_few_blocks_whatever_the_archive_declares(tmp_path: Path) -> None:
    # Each declares hundreds of MB in a compressed file of a few hundred KB; the old checker loaded the
    # targets whole and scanned a sample at a time, so each grew the process by as much as it declared.
    cases = {
        "targets": [("x_train", (100_000_000, 1), "|i1"), ("y_train", (100_000_000,), "<f4")],
        "one_sample": [("x_train", (1, 100_000_000), "<f4"), ("y_train", (1,), "<i8")],
        "one_hot": [("x_train", (20_000_000, 1), "|i1"), ("y_train", (20_000_000, 10), "|u1")],
    }
    for case, members in cases.items():
        path = tmp_path / f"{case}.npz"
        with zipfile.ZipFile(path, "w") as zf:
            for name, shape, descr in members:
                zeros_member(zf, name, shape, descr)
        assert path.stat().st_size < 1_000_000
        tracemalloc.start()
        started = time.perf_counter()
        try:
            summary = inspect_npz(path, max_decompressed_bytes=CAP)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        took = time.perf_counter() - started
        print(f"{case}: {summary.splits['train']} samples, peak {peak / 2**20:.1f} MiB, {took:.2f} s")
        assert peak < 24 * 2**20, f"{case} peaked at {peak / 2**20:.0f} MiB"


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("labels, expected", [
    (np.eye(4, dtype=np.uint8)[np.arange(3000) % 4], ("classification", 4)),
    (np.eye(4, dtype=np.float32)[np.arange(3000) % 4] * 2, ("regression", None)),  # 2s, not 1s
    (np.vstack([np.eye(3)[np.arange(2999) % 3], [[1, 1, 0]]]), ("regression", None)),  # last row: two 1s
    (np.vstack([[[0, 0, 0]], np.eye(3)[np.arange(2999) % 3]]), ("regression", None)),  # first row: none
])
def test_one_hot_guess_streams_in_either_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, order: str,
                                               labels: np.ndarray, expected: tuple[str, int | None]) -> None:
    # Tiny blocks and windows: the Fortran-order check takes several passes of 700 rows each.
    monkeypatch.setattr("trainyard.datasets.npz.SCAN_BLOCK_BYTES", 256)
    monkeypatch.setattr("trainyard.datasets.summary.ONE_HOT_WINDOW_ROWS", 700)
    y = np.asarray(labels, order=order)
    path = tmp_path / "d.npz"
    np.savez_compressed(path, x_train=np.ones((len(y), 2), dtype=np.float32), y_train=y)
    summary = inspect_npz(path, max_decompressed_bytes=CAP)
    assert (summary.task, summary.n_classes) == expected == infer_task([y])


@pytest.mark.parametrize("labels, expected", [
    ([np.arange(2000) % 7, np.array([9])], ("classification", 10)),
    ([np.arange(2000) % 7 - 1], ("regression", None)),
    ([(np.arange(2000) % 5).astype(np.float64)], ("classification", 5)),
    ([np.arange(2000, dtype=np.float64)], ("regression", None)),
    ([np.full(2000, 0.5)], ("regression", None)),
])
def test_scalar_guess_streams_across_blocks_and_splits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       labels: list[np.ndarray], expected: tuple) -> None:
    monkeypatch.setattr("trainyard.datasets.npz.SCAN_BLOCK_BYTES", 64)
    arrays = {"x_train": np.ones((len(labels[0]), 1)), "y_train": labels[0]}
    if len(labels) > 1:
        arrays.update(x_test=np.ones((len(labels[1]), 1)), y_test=labels[1])
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    summary = inspect_npz(path, max_decompressed_bytes=CAP)
    assert (summary.task, summary.n_classes) == expected == infer_task(labels)


def test_non_finite_target_found_in_a_later_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("trainyard.datasets.npz.SCAN_BLOCK_BYTES", 64)
    y = np.arange(1000, dtype=np.float64) % 3
    y[640] = np.inf
    path = tmp_path / "d.npz"
    np.savez(path, x_train=np.ones((1000, 2)), y_train=y)
    err = refused(path)
    assert [e["field"] for e in err.errors] == ["file:y_train"] and "sample 640" in err.detail
