"""Validating and loading `.npz` uploads without trusting anything inside them.

An `.npz` is a zip of `.npy` files. Three things can go wrong before a single number is looked at, and
each is checked from metadata alone, before any member is inflated:

- a zip bomb: the central directory declares each member's uncompressed size; their sum is capped.
  zipfile never inflates a member past its declared size, so the cap also holds when the sizes lie.
- a lying `.npy` header: numpy allocates `prod(shape) * itemsize` bytes from the header *before* reading
  the data, so a 100-byte member claiming a terabyte shape would be a memory bomb. The header is read
  alone and must describe exactly the member's declared size.
- pickles: object arrays are refused from the header's dtype, and `allow_pickle=False` stays on anyway.
"""
from __future__ import annotations

import logging
import math
import os
import zipfile
import zlib
from pathlib import Path
import numpy as np
from numpy.lib import format as npy_format

from service.datasets.errors import DatasetError, fail
from service.datasets.summary import DatasetSummary, infer_task

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
ARRAY_NAMES = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
# numpy's own default: ample for plain numeric arrays (their headers are ~128 bytes) and it bounds the
# literal_eval of a hostile header.
_MAX_NPY_HEADER_BYTES = 10_000
# bool, signed and unsigned integers, floats; no complex, strings, datetimes, objects or records.
_ALLOWED_KINDS = "biuf"

Arrays = dict[str, np.ndarray | None]


def inspect_npz(path: str | os.PathLike[str], *, max_decompressed_bytes: int) -> DatasetSummary:
    """Validate an `.npz` upload and describe it; raises `DatasetError` for anything unusable.

    The archive may hold only `x_train`, `y_train` (required) and the pairs `x_val`/`y_val` and
    `x_test`/`y_test`, whose uncompressed sizes must sum to at most `max_decompressed_bytes`.
    See `service.datasets.summary.infer_task` for how the task is guessed.
    """
    # Features are checked in blocks straight from the archive, never loaded whole: an upload of
    # hundreds of MB must not grow the API process by as much. Targets are loaded (the task is inferred
    # from their values); they are one number or a few per sample.
    arrays = _read(Path(path), max_decompressed_bytes, scan_features=True)
    return _summarize(arrays)


def load_npz(path: str | os.PathLike[str], *, max_decompressed_bytes: int | None = None) -> Arrays:
    """Load an `.npz` as `{x_train, y_train, x_val, y_val, x_test, y_test}` (absent splits are None).

    Runs the same checks as `inspect_npz`, so a file replaced after upload still cannot hurt the worker;
    without `max_decompressed_bytes` the total is not capped but every header must still match its size.
    """
    return _read(Path(path), max_decompressed_bytes)


class _ScannedArray:
    """What validation needs of an array (shape, dtype, finiteness) without holding its data."""

    def __init__(self, path: Path, name: str, shape: tuple[int, ...], dtype: np.dtype) -> None:
        self.path, self.name, self.shape, self.dtype = path, name, shape, dtype
        self.ndim = len(shape)

    def __len__(self) -> int:
        return self.shape[0]

    def first_non_finite_sample(self) -> int | None:
        """The sample holding the first NaN or infinity, reading SCAN_BLOCK_BYTES at a time."""
        if self.dtype.kind != "f":
            return None
        per_sample = math.prod(self.shape[1:])
        total = math.prod(self.shape)
        block = max(per_sample, SCAN_BLOCK_BYTES // self.dtype.itemsize // max(per_sample, 1) * per_sample)
        with zipfile.ZipFile(self.path) as zf, zf.open(self.name + ".npy") as fp:
            version = npy_format.read_magic(fp)
            read_header = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
            _shape, fortran, _dtype = read_header(fp, _MAX_NPY_HEADER_BYTES)
            seen = 0
            while seen < total:
                values = np.frombuffer(fp.read(min(block, total - seen) * self.dtype.itemsize), dtype=self.dtype)
                if values.size == 0:  # pragma: no cover - sizes were checked against the headers
                    break
                bad = np.flatnonzero(~np.isfinite(values))
                if bad.size:
                    flat = seen + int(bad[0])
                    return flat % self.shape[0] if fortran else flat // max(per_sample, 1)
                seen += values.size
        return None


# How much of a feature array is checked at a time when it is scanned rather than loaded.
SCAN_BLOCK_BYTES = 4 * 1024 * 1024


def _first_non_finite_sample(arr: np.ndarray | _ScannedArray) -> int | None:
    if isinstance(arr, _ScannedArray):
        try:
            return arr.first_non_finite_sample()
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError) as exc:
            fail(f"file:{arr.name}", f"{arr.name} could not be read: the archive is damaged ({exc}). "
                 "Save the file again with numpy.savez.")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        return int(np.argwhere(~np.isfinite(arr))[0][0])
    return None


def _read(path: Path, max_decompressed_bytes: int | None, *, scan_features: bool = False) -> Arrays:
    headers = _check_archive(path, max_decompressed_bytes)
    try:
        npz = np.load(path, allow_pickle=False, max_header_size=_MAX_NPY_HEADER_BYTES)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        fail("file", f"The file could not be read as a NumPy .npz archive ({exc}). Save it with numpy.savez.")
    if not isinstance(npz, np.lib.npyio.NpzFile):
        fail("file", "The file is not a NumPy .npz archive. Save it with numpy.savez or "
             "numpy.savez_compressed.")
    arrays: Arrays = dict.fromkeys(ARRAY_NAMES)
    with npz:
        for name, (shape, dtype) in headers.items():
            if scan_features and name.startswith("x_"):
                arrays[name] = _ScannedArray(path, name, shape, dtype)  # type: ignore[assignment]
                continue
            try:
                value = npz[name]
            except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error,
                    NotImplementedError) as exc:
                fail(f"file:{name}", f"{name} could not be read: the archive is damaged ({exc}). "
                     "Save the file again with numpy.savez.")
            if not isinstance(value, np.ndarray):  # pragma: no cover - headers were checked above
                fail(f"file:{name}", f"{name} is not a NumPy array.")
            arrays[name] = value
    _check_contents(arrays)
    return arrays


_Header = tuple[tuple[int, ...], np.dtype]


def _check_archive(path: Path, max_decompressed_bytes: int | None) -> dict[str, _Header]:
    """Check member names, declared sizes and every `.npy` header; return `{name: (shape, dtype)}`."""
    try:
        zf = zipfile.ZipFile(path)
    except FileNotFoundError:
        fail("file", "The uploaded file is missing on the server; upload it again.")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError):
        fail("file", "The file is not a valid .npz (zip) archive. Save your arrays with numpy.savez or "
             "numpy.savez_compressed.")
    with zf:
        infos = _check_members(zf)
        total = sum(info.file_size for info in infos.values())
        if max_decompressed_bytes is not None and total > max_decompressed_bytes:
            fail("file", f"The archive unpacks to {_mb(total)}, more than the limit of "
                 f"{_mb(max_decompressed_bytes)}. Upload a smaller data set.")
        return {name: _check_header(zf, name, info) for name, info in infos.items()}


def _check_members(zf: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    errors: list[dict[str, str]] = []
    infos: dict[str, zipfile.ZipInfo] = {}
    allowed = ", ".join(ARRAY_NAMES)
    for info in zf.infolist():
        name = info.filename[:-4] if info.filename.endswith(".npy") else None
        if name not in ARRAY_NAMES:
            errors.append({"field": "file", "message": f"The archive contains '{info.filename[:100]}', which "
                           f"is not an allowed array; only {allowed} may be present."})
        elif name in infos:
            # zipfile would silently pick the last of two same-named members; refuse the ambiguity.
            errors.append({"field": f"file:{name}", "message": f"The archive contains {name} twice."})
        elif info.flag_bits & 0x1:
            errors.append({"field": f"file:{name}", "message": f"{name} is encrypted; upload an "
                           "unencrypted archive."})
        else:
            infos[name] = info
    for name in ("x_train", "y_train"):
        if name not in infos:
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


def _check_header(zf: zipfile.ZipFile, name: str, info: zipfile.ZipInfo) -> _Header:
    field = f"file:{name}"
    try:
        with zf.open(info) as fp:
            version = npy_format.read_magic(fp)
            if version == (1, 0):
                shape, _fortran, dtype = npy_format.read_array_header_1_0(fp, _MAX_NPY_HEADER_BYTES)
            elif version == (2, 0):
                shape, _fortran, dtype = npy_format.read_array_header_2_0(fp, _MAX_NPY_HEADER_BYTES)
            else:
                # 3.0 exists only for structured dtypes with non-Latin-1 field names, which we refuse anyway.
                fail(field, f"{name} uses .npy format version {version[0]}.{version[1]}, which is not "
                     "supported; save plain numeric arrays with numpy.savez.")
            header_bytes = fp.tell()
    except DatasetError:
        raise
    except (zipfile.BadZipFile, zlib.error, NotImplementedError) as exc:
        # zipfile stops at the declared size and checks the CRC, so a member larger than it claims lands here.
        fail(field, f"{name} could not be read: the archive is damaged ({exc}). Save the file again with "
             "numpy.savez.")
    except (ValueError, EOFError, OSError, SyntaxError) as exc:
        fail(field, f"{name} is not a valid NumPy array ({exc}). Save the file with numpy.savez.")
    _check_dtype(name, dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    if header_bytes + nbytes != info.file_size:
        fail(field, f"{name}'s header describes {nbytes} bytes of data but the archive holds "
             f"{max(info.file_size - header_bytes, 0)}; the file is damaged. Save it again with numpy.savez.")
    return shape, dtype


def _check_dtype(name: str, dtype: np.dtype) -> None:
    field = f"file:{name}"
    if dtype.hasobject:
        fail(field, f"{name} is an array of Python objects (dtype=object), which cannot be loaded safely. "
             "Convert it to a numeric array first, e.g. numpy.asarray(values, dtype='float32').")
    if dtype.kind not in _ALLOWED_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        fail(field, f"{name} has dtype {dtype}; only bool, integer and float arrays are supported. "
             "Convert it with .astype('float32') (or an integer type for class labels).")


def _check_contents(arrays: Arrays) -> None:
    train_shapes: dict[str, tuple[int, ...]] = {}
    for split in SPLITS:
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x is None or y is None:
            continue
        xn, yn = f"x_{split}", f"y_{split}"
        if x.ndim < 2:
            fail(f"file:{xn}", f"{xn} has shape {x.shape}; it must have one row per sample and at least one "
                 f"feature per row, e.g. reshape a 1-D array with {xn}.reshape(-1, 1).")
        if y.ndim < 1:
            fail(f"file:{yn}", f"{yn} is a single number; it must have one entry per sample.")
        if len(x) != len(y):
            fail(f"file:{yn}", f"{xn} has {len(x)} samples but {yn} has {len(y)}; they must have the same "
                 "length.")
        if len(x) == 0:
            fail(f"file:{xn}", f"{xn} has no samples; the {split} split needs at least one.")
        for arr, arr_name in ((x, xn), (y, yn)):
            bad = _first_non_finite_sample(arr)
            if bad is not None:
                fail(f"file:{arr_name}", f"{arr_name} contains NaN or infinite values (first at sample "
                     f"{bad}); remove or fill them before uploading.")
        if split == "train":
            train_shapes = {"x": x.shape[1:], "y": y.shape[1:]}
            continue
        for letter, arr in (("x", x), ("y", y)):
            if arr.shape[1:] != train_shapes[letter]:
                fail(f"file:{letter}_{split}", f"Each sample of {letter}_{split} has shape "
                     f"{list(arr.shape[1:])} but each sample of {letter}_train has shape "
                     f"{list(train_shapes[letter])}; all splits must match.")


def _summarize(arrays: Arrays) -> DatasetSummary:
    x_train, y_train = arrays["x_train"], arrays["y_train"]
    assert x_train is not None and y_train is not None  # guaranteed by _check_members
    ys = [y for key, y in arrays.items() if key.startswith("y_") and y is not None]
    task, n_classes = infer_task(ys)
    splits: dict[str, int | None] = {}
    for split in SPLITS:
        x = arrays[f"x_{split}"]
        splits[split] = None if x is None else int(len(x))
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


def _mb(n: int) -> str:
    return f"{n / 1_000_000:.1f} MB" if n >= 100_000 else f"{n} bytes"

