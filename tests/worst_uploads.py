"""The most expensive uploads we know of, per kind, written without holding them in memory.

Each was found by experiment against the earlier checker (figures in the commit that bounded them): a few
hundred KB of compressed `.npz` declaring hundreds of MB of labels, one sample, or one-hot rows; a huge
central directory; bzip2 members; CSVs of tiny rows, text labels, one enormous line, 10,000 columns, or
non-ASCII cells (which take the cell-by-cell path). `tests/service/test_upload_cost.py` uploads them to a
real gunicorn worker and measures its RSS; `bench/upload_checks.py` measures how fast each is checked.
"""
from __future__ import annotations

import io
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

# (file name, CSV target or None, writer(path, scale)); `scale` is in MB of declared/written data.
Maker = Callable[[Path, int], None]


def npy_header(shape: tuple[int, ...], descr: str, fortran: bool = False) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": fortran, "shape": shape})
    return buf.getvalue()


def _member(zf: zipfile.ZipFile, name: str, shape: tuple[int, ...], descr: str, chunks: Iterable[bytes],
            fortran: bool = False, compression: int = zipfile.ZIP_DEFLATED) -> None:
    info = zipfile.ZipInfo(name + ".npy")
    info.compress_type = compression
    with zf.open(info, "w", force_zip64=True) as fp:
        fp.write(npy_header(shape, descr, fortran))
        for chunk in chunks:
            fp.write(chunk)


def _repeat(pattern: bytes, total: int, chunk: int = 4 << 20) -> Iterable[bytes]:
    block = pattern * max(chunk // len(pattern), 1)
    while total > 0:
        yield block[:min(total, len(block))]
        total -= len(block)


def npz_targets(path: Path, scale: int) -> None:
    """Labels of `scale` MB as float32 (the old checker loaded them whole, then copied them to float64)."""
    n = scale * 1_000_000 // 4
    with zipfile.ZipFile(path, "w") as zf:
        _member(zf, "x_train", (n, 1), "|i1", _repeat(b"\0", n))
        _member(zf, "y_train", (n,), "<f4", _repeat(b"\0", 4 * n))


def npz_one_sample(path: Path, scale: int) -> None:
    """One sample of `scale` MB of features (the old checker read a whole sample at a time)."""
    k = scale * 1_000_000 // 4
    with zipfile.ZipFile(path, "w") as zf:
        _member(zf, "x_train", (1, k), "<f4", _repeat(b"\0", 4 * k))
        _member(zf, "y_train", (1,), "<i8", [b"\0" * 8])


def npz_one_hot_fortran(path: Path, scale: int) -> None:
    """Real one-hot labels in Fortran order: columns one after another, so every row must be tracked."""
    k = 10
    n = scale * 1_000_000 // k // k * k
    with zipfile.ZipFile(path, "w") as zf:
        _member(zf, "x_train", (n, 1), "|i1", _repeat(b"\0", n))
        columns = (chunk for j in range(k) for chunk in _repeat(bytes(j) + b"\1" + bytes(k - 1 - j), n))
        _member(zf, "y_train", (n, k), "|u1", columns, fortran=True)


def npz_many_members(path: Path, scale: int) -> None:
    """A central directory of `scale` * 10,000 empty entries."""
    with zipfile.ZipFile(path, "w") as zf:
        for i in range(scale * 10_000):
            zf.writestr(f"m{i}", b"")


def npz_bzip2(path: Path, scale: int) -> None:
    """bzip2 members: a few hundred bytes unpack to `scale` MB in one read."""
    n = scale * 1_000_000 // 4
    with zipfile.ZipFile(path, "w") as zf:
        _member(zf, "x_train", (n, 1), "<f4", _repeat(b"\0", 4 * n), compression=zipfile.ZIP_BZIP2)
        _member(zf, "y_train", (n,), "<f4", _repeat(b"\0", 4 * n), compression=zipfile.ZIP_BZIP2)


def _csv(path: Path, header: str, line: str, scale: int) -> None:
    with path.open("w", encoding="utf-8", newline="") as fh:
        fh.write(header)
        for chunk in _repeat(line.encode(), scale * 1_000_000):
            fh.write(chunk.decode())


def csv_tiny_rows(path: Path, scale: int) -> None:
    _csv(path, "a,b\n", "1,1\n", scale)


def csv_text_labels(path: Path, scale: int) -> None:
    _csv(path, "a,b\n", "1,x\n", scale)


def csv_non_ascii(path: Path, scale: int) -> None:
    _csv(path, "a,b\n", "1,\u00e9\n", scale)


def csv_long_line(path: Path, scale: int) -> None:
    """One data line of `scale` MB of short cells (the csv module builds every cell before any check)."""
    with path.open("w", newline="") as fh:
        fh.write("a,b\n")
        for chunk in _repeat(b"12,", scale * 1_000_000):
            fh.write(chunk.decode())
        fh.write("\n")


def csv_wide(path: Path, scale: int) -> None:
    header = ",".join(f"c{i}" for i in range(10_000)) + "\n"
    _csv(path, header, ",".join(["1.5"] * 10_000) + "\n", scale)


WORST: dict[str, tuple[str | None, Maker]] = {
    "targets.npz": (None, npz_targets),
    "one_sample.npz": (None, npz_one_sample),
    "one_hot_fortran.npz": (None, npz_one_hot_fortran),
    "many_members.npz": (None, npz_many_members),
    "bzip2.npz": (None, npz_bzip2),
    "tiny_rows.csv": ("b", csv_tiny_rows),
    "text_labels.csv": ("b", csv_text_labels),
    "non_ascii.csv": ("b", csv_non_ascii),
    "long_line.csv": ("b", csv_long_line),
    "wide.csv": ("c0", csv_wide),
}
