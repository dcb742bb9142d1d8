"""Validating and loading `.npz` uploads without trusting anything inside them.

An `.npz` is a zip of `.npy` files. Everything that could cost memory or time is checked from metadata
first, before any member is inflated:

- the archive's central directory: its size is read from the end record and capped before zipfile
  parses it (a directory of a million empty entries would otherwise cost gigabytes of `ZipInfo`s);
- compression: only stored and deflate members (what numpy writes). zipfile inflates bzip2 and LZMA
  members a whole compressed read at a time, so a few KB of bzip2 could unpack to gigabytes at once;
- a zip bomb: the central directory declares each member's uncompressed size; their sum is capped.
  zipfile never inflates a member past its declared size, so the cap also holds when the sizes lie;
- each `.npy` header, read alone: dims must be whole numbers >= 1 (numpy accepts negative ones), at
  most `MAX_NDIM` of them, and must describe exactly the member's declared size (numpy allocates
  `prod(shape) * itemsize` bytes from the header *before* reading the data); object, string and record
  dtypes are refused (no pickles; `allow_pickle=False` stays on anyway);
- lengths and per-sample shapes across members.

Then the values are read in blocks of `SCAN_BLOCK_BYTES` straight from the archive, never a whole member:
features are checked for NaN and infinity, targets too, and feed the task guess (`TargetStats`).
Inspecting an upload therefore costs a few blocks of memory whatever it declares.
"""
from __future__ import annotations

import logging
import math
import os
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable

import numpy as np
from numpy.lib import format as npy_format

from trainyard.datasets.errors import DatasetError, fail, open_upload
from trainyard.datasets.pacing import Pacer
from trainyard.datasets.summary import DatasetSummary, TargetStats, array_blocks, feed_targets

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
ARRAY_NAMES = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
# numpy's own default: ample for plain numeric arrays (their headers are ~128 bytes) and it bounds the
# literal_eval of a hostile header.
_MAX_NPY_HEADER_BYTES = 10_000
# bool, signed and unsigned integers, floats; no complex, strings, datetimes, objects or records.
_ALLOWED_KINDS = "biuf"
# numpy 1.x's own limit on dimensions.
MAX_NDIM = 32
# At most the six arrays, each a central-directory entry of ~100 bytes: anything much larger is refused
# before zipfile reads it.
MAX_MEMBERS = 64
MAX_CENTRAL_DIRECTORY_BYTES = 64 * 1024
_COMPRESSIONS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
# How much of an array is read and checked at a time.
SCAN_BLOCK_BYTES = 1024 * 1024
# Unknown members named in the error before the list is cut short.
_LISTED_MEMBERS = 10

Arrays = dict[str, np.ndarray | None]
_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError)


@dataclass(frozen=True)
class _Member:
    """One array of the archive, as its central-directory entry and `.npy` header describe it."""

    name: str
    info: zipfile.ZipInfo
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran: bool

    @property
    def field(self) -> str:
        return f"file:{self.name}"

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)


def inspect_npz(path: str | os.PathLike[str], *, max_decompressed_bytes: int) -> DatasetSummary:
    """Validate an `.npz` upload and describe it; raises `DatasetError` for anything unusable.

    The archive may hold only `x_train`, `y_train` (required) and the pairs `x_val`/`y_val` and
    `x_test`/`y_test`, whose uncompressed sizes must sum to at most `max_decompressed_bytes`.
    See `trainyard.datasets.summary.infer_task` for how the task is guessed. Memory stays at a few
    `SCAN_BLOCK_BYTES` blocks whatever the archive declares.
    """
    with _archive(Path(path)) as zf:
        members = _check_archive(zf, max_decompressed_bytes)
        stats = _new_stats(members)
        for x, y in _pairs(members):
            _check_finite(x, lambda m=x: _stream(zf, m))
            _scan_targets(zf, y, stats)
    return _summarize(members, stats)


def load_npz(path: str | os.PathLike[str], *, max_decompressed_bytes: int | None = None) -> Arrays:
    """Load an `.npz` as `{x_train, y_train, x_val, y_val, x_test, y_test}` (absent splits are None).

    Runs the same checks as `inspect_npz`, so a file replaced after upload still cannot hurt the worker;
    without `max_decompressed_bytes` the total is not capped but every header must still match its size.
    """
    arrays: Arrays = dict.fromkeys(ARRAY_NAMES)
    with _archive(Path(path)) as zf:
        members = _check_archive(zf, max_decompressed_bytes)
        for m in members.values():
            arrays[m.name] = _read_whole(zf, m)
    for x, y in _pairs(members):
        for m in (x, y):
            arr = arrays[m.name]
            assert arr is not None
            _check_finite(m, lambda a=arr: array_blocks(a, SCAN_BLOCK_BYTES))
    return arrays


@contextmanager
def _archive(path: Path) -> Iterator[zipfile.ZipFile]:
    with open_upload(path) as fh:
        _check_central_directory(fh)
        try:
            zf = zipfile.ZipFile(fh)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError):
            _not_a_zip()
        with zf:
            yield zf


def _not_a_zip() -> None:
    fail("file", "The file is not a valid .npz (zip) archive. Save your arrays with numpy.savez or "
         "numpy.savez_compressed.")


def _check_central_directory(fh: IO[bytes]) -> None:
    """Refuse a central directory too large to be the six arrays', before zipfile reads all of it."""
    try:
        # The very end record zipfile.ZipFile itself reads next (a private helper, stable since Python 2).
        end = zipfile._EndRecData(fh)  # type: ignore[attr-defined]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile):
        end = None
    if end is None:
        _not_a_zip()
    entries, cd_bytes = end[zipfile._ECD_ENTRIES_TOTAL], end[zipfile._ECD_SIZE]  # type: ignore[attr-defined]
    if entries > MAX_MEMBERS or cd_bytes > MAX_CENTRAL_DIRECTORY_BYTES:
        fail("file", f"The archive lists {entries} members in a directory of {cd_bytes} bytes; an .npz for "
             f"Trainyard holds at most the arrays {', '.join(ARRAY_NAMES)}. Save it with numpy.savez.")
    fh.seek(0)


def _check_archive(zf: zipfile.ZipFile, max_decompressed_bytes: int | None) -> dict[str, _Member]:
    """Member names, compression, declared sizes, every `.npy` header, and the shapes across members."""
    infos = _check_members(zf)
    total = sum(info.file_size for info in infos.values())
    if max_decompressed_bytes is not None and total > max_decompressed_bytes:
        fail("file", f"The archive unpacks to {_mb(total)}, more than the limit of "
             f"{_mb(max_decompressed_bytes)}. Upload a smaller data set.")
    members = {name: _check_header(zf, name, info) for name, info in infos.items()}
    _check_shapes(members)
    return members


def _check_members(zf: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    errors: list[dict[str, str]] = []
    infos: dict[str, zipfile.ZipInfo] = {}
    allowed = ", ".join(ARRAY_NAMES)
    unknown = 0
    for info in zf.infolist():
        name = info.filename[:-4] if info.filename.endswith(".npy") else None
        if name not in ARRAY_NAMES:
            unknown += 1
            if unknown <= _LISTED_MEMBERS:
                errors.append({"field": "file", "message": f"The archive contains '{info.filename[:100]}', "
                               f"which is not an allowed array; only {allowed} may be present."})
        elif name in infos:
            # zipfile would silently pick the last of two same-named members; refuse the ambiguity.
            errors.append({"field": f"file:{name}", "message": f"The archive contains {name} twice."})
        elif info.flag_bits & 0x1:
            errors.append({"field": f"file:{name}", "message": f"{name} is encrypted; upload an "
                           "unencrypted archive."})
        elif info.compress_type not in _COMPRESSIONS:
            errors.append({"field": f"file:{name}", "message": f"{name} is compressed with method "
                           f"{info.compress_type}; only stored and deflate members (numpy.savez and "
                           "numpy.savez_compressed) are accepted."})
        else:
            infos[name] = info
    if unknown > _LISTED_MEMBERS:
        errors.append({"field": "file", "message": f"The archive contains {unknown - _LISTED_MEMBERS} more "
                       "members that are not allowed arrays."})
    for name in ("x_train", "y_train"):
        if name not in infos and not any(e["field"] == f"file:{name}" for e in errors):
            errors.append({"field": f"file:{name}", "message": f"The archive has no {name}; it is required "
                           "(save it with numpy.savez(path, x_train=..., y_train=...))."})
    for split in ("val", "test"):
        x, y = f"x_{split}", f"y_{split}"
        if (x in infos) != (y in infos):
            have, missing = (x, y) if x in infos else (y, x)
            errors.append({"field": f"file:{missing}", "message": f"The archive has {have} but no {missing}; "
                           f"include both or neither."})
    if errors:
        raise DatasetError(errors)
    return infos


def _read_header(fp: IO[bytes], field: str, name: str) -> tuple[Any, bool, np.dtype]:
    version = npy_format.read_magic(fp)
    if version == (1, 0):
        return npy_format.read_array_header_1_0(fp, _MAX_NPY_HEADER_BYTES)
    if version == (2, 0):
        return npy_format.read_array_header_2_0(fp, _MAX_NPY_HEADER_BYTES)
    # 3.0 exists only for structured dtypes with non-Latin-1 field names, which we refuse anyway.
    fail(field, f"{name} uses .npy format version {version[0]}.{version[1]}, which is not supported; save "
         "plain numeric arrays with numpy.savez.")


def _check_header(zf: zipfile.ZipFile, name: str, info: zipfile.ZipInfo) -> _Member:
    field = f"file:{name}"
    try:
        with zf.open(info) as fp:
            shape, fortran, dtype = _read_header(fp, field, name)
            header_bytes = fp.tell()
    except DatasetError:
        raise
    except (zipfile.BadZipFile, zlib.error, NotImplementedError) as exc:
        # zipfile stops at the declared size and checks the CRC, so a member larger than it claims lands here.
        fail(field, f"{name} could not be read: the archive is damaged ({exc}). Save the file again with "
             "numpy.savez.")
    except (ValueError, EOFError, OSError, SyntaxError, TypeError) as exc:
        fail(field, f"{name} is not a valid NumPy array ({exc}). Save the file with numpy.savez.")
    _check_dtype(name, dtype)
    # numpy checks only that the dims are ints: True, negative and absurd ones all pass its parser.
    if not all(type(d) is int for d in shape):
        fail(field, f"{name}'s .npy header gives the shape {_shape_text(shape)}, which is not a list of whole "
             "numbers; the file is damaged. Save it again with numpy.savez.")
    if len(shape) > MAX_NDIM:
        fail(field, f"{name} has {len(shape)} dimensions; at most {MAX_NDIM} are supported.")
    if any(d < 0 for d in shape):
        fail(field, f"{name}'s .npy header gives the shape {list(shape)}, with a negative dimension; the file "
             "is damaged. Save it again with numpy.savez.")
    nbytes = math.prod(shape) * dtype.itemsize
    if header_bytes + nbytes != info.file_size:
        fail(field, f"{name}'s header describes {_bytes_text(nbytes)} of data but the archive holds "
             f"{max(info.file_size - header_bytes, 0)}; the file is damaged. Save it again with numpy.savez.")
    return _Member(name, info, shape, dtype, bool(fortran) and len(shape) > 1)


def _check_dtype(name: str, dtype: np.dtype) -> None:
    field = f"file:{name}"
    if dtype.hasobject:
        fail(field, f"{name} is an array of Python objects (dtype=object), which cannot be loaded safely. "
             "Convert it to a numeric array first, e.g. numpy.asarray(values, dtype='float32').")
    if dtype.kind not in _ALLOWED_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        fail(field, f"{name} has dtype {dtype}; only bool, integer and float arrays are supported. "
             "Convert it with .astype('float32') (or an integer type for class labels).")


def _check_shapes(members: dict[str, _Member]) -> None:
    """Everything about shapes, from the headers alone: nothing has been inflated yet."""
    train: dict[str, tuple[int, ...]] = {}
    for x, y in _pairs(members):
        split = x.name.removeprefix("x_")
        if x.ndim < 2:
            fail(x.field, f"{x.name} has shape {x.shape}; it must have one row per sample and at least one "
                 f"feature per row, e.g. reshape a 1-D array with {x.name}.reshape(-1, 1).")
        if y.ndim < 1:
            fail(y.field, f"{y.name} is a single number; it must have one entry per sample.")
        if x.shape[0] != y.shape[0]:
            fail(y.field, f"{x.name} has {x.shape[0]} samples but {y.name} has {y.shape[0]}; they must have "
                 "the same length.")
        if x.shape[0] == 0:
            fail(x.field, f"{x.name} has no samples; the {split} split needs at least one.")
        for m in (x, y):
            if 0 in m.shape:
                fail(m.field, f"{m.name} has shape {list(m.shape)}: a dimension of size 0 leaves each sample "
                     "without values. Every dimension must be at least 1.")
        if split == "train":
            train = {"x": x.shape[1:], "y": y.shape[1:]}
            continue
        for letter, m in (("x", x), ("y", y)):
            if m.shape[1:] != train[letter]:
                fail(m.field, f"Each sample of {m.name} has shape {list(m.shape[1:])} but each sample of "
                     f"{letter}_train has shape {list(train[letter])}; all splits must match.")


def _pairs(members: dict[str, _Member]) -> Iterator[tuple[_Member, _Member]]:
    for split in SPLITS:
        x, y = members.get(f"x_{split}"), members.get(f"y_{split}")
        if x is not None and y is not None:
            yield x, y


_Blocks = Callable[[], Iterator[tuple[int, np.ndarray]]]


def _check_finite(m: _Member, blocks: _Blocks) -> None:
    """Refuse NaN and infinity, naming the sample of the first one; only float arrays can hold them."""
    if m.dtype.kind != "f":
        return
    for offset, values in _guarded(m, blocks()):
        _fail_if_not_finite(m, offset, values)


def _fail_if_not_finite(m: _Member, offset: int, values: np.ndarray) -> None:
    if m.dtype.kind != "f":
        return
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        flat = offset + int(bad[0])
        sample = flat % m.shape[0] if m.fortran else flat // max(math.prod(m.shape[1:]), 1)
        fail(m.field, f"{m.name} contains NaN or infinite values (first at sample {sample}); remove or fill "
             "them before uploading.")


def _scan_targets(zf: zipfile.ZipFile, y: _Member, stats: TargetStats) -> None:
    """Check a target array for NaN and infinity and feed it to the task guess, in one pass when it can."""
    checked = {"done": False, "started": False}

    def first_pass() -> Iterator[tuple[int, np.ndarray]]:
        checked["started"] = True
        for offset, values in _guarded(y, _stream(zf, y)):
            _fail_if_not_finite(y, offset, values)
            yield offset, values
        checked["done"] = True

    def blocks() -> Iterator[tuple[int, np.ndarray]]:
        # Later passes (a huge Fortran-ordered one-hot candidate) only read again.
        return _guarded(y, _stream(zf, y)) if checked["started"] else first_pass()

    feed_targets(stats, y, blocks)
    if not checked["done"]:  # the guess needed none or only part of the values: check the rest
        _check_finite(y, lambda: _stream(zf, y))


def _guarded(m: _Member, blocks: Iterator[tuple[int, np.ndarray]]) -> Iterator[tuple[int, np.ndarray]]:
    try:
        yield from blocks
    except DatasetError:
        raise
    except _READ_ERRORS as exc:
        fail(m.field, f"{m.name} could not be read: the archive is damaged ({exc}). Save the file again with "
             "numpy.savez.")


def _stream(zf: zipfile.ZipFile, m: _Member) -> Iterator[tuple[int, np.ndarray]]:
    """The member's values in storage order, `SCAN_BLOCK_BYTES` at a time: `(flat offset, values)`."""
    per_block = max(SCAN_BLOCK_BYTES // m.dtype.itemsize, 1)
    pacer = Pacer()
    with zf.open(m.info) as fp:
        _read_header(fp, m.field, m.name)
        seen, total = 0, m.size
        while seen < total:
            want = min(per_block, total - seen)
            raw = fp.read(want * m.dtype.itemsize)
            if len(raw) != want * m.dtype.itemsize:  # pragma: no cover - sizes were checked against the header
                raise EOFError(f"{m.name} ends early")
            yield seen, np.frombuffer(raw, dtype=m.dtype)
            seen += want
            pacer.tick()
        fp.read(1)  # at the end: zipfile checks the member's CRC


def _read_whole(zf: zipfile.ZipFile, m: _Member) -> np.ndarray:
    try:
        with zf.open(m.info) as fp:
            return npy_format.read_array(fp, allow_pickle=False, max_header_size=_MAX_NPY_HEADER_BYTES)
    except _READ_ERRORS as exc:
        fail(m.field, f"{m.name} could not be read: the archive is damaged ({exc}). Save the file again with "
             "numpy.savez.")


def _new_stats(members: dict[str, _Member]) -> TargetStats:
    ys = [y for _x, y in _pairs(members)]
    return TargetStats(ys[0].shape[1:], [y.dtype for y in ys])


def _summarize(members: dict[str, _Member], stats: TargetStats) -> DatasetSummary:
    x_train, y_train = members["x_train"], members["y_train"]
    task, n_classes = stats.result()
    splits: dict[str, int | None] = {}
    for split in SPLITS:
        x = members.get(f"x_{split}")
        splits[split] = None if x is None else int(x.shape[0])
    return DatasetSummary(
        format="npz",
        splits=splits,
        input_shape=[int(d) for d in x_train.shape[1:]],
        x_dtype=str(x_train.dtype),
        y_dtype=str(y_train.dtype),
        target_shape=[int(d) for d in y_train.shape[1:]],
        task=task,
        n_classes=n_classes,
    )


def _shape_text(shape: Any) -> str:
    return repr(shape)[:200]


def _bytes_text(n: int) -> str:
    return f"{n} bytes" if n < 10**30 else f"more than 10^30 bytes ({len(str(n))}-digit count)"


def _mb(n: int) -> str:
    return f"{n / 1_000_000:.1f} MB" if n >= 100_000 else f"{n} bytes"
