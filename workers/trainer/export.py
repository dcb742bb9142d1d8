"""The best checkpoint as models that serve raw inputs (SavedModel, `.keras`, ONNX), archived with the card.

The `.keras` checkpoint is the trained model: it takes inputs normalised with the training split's
statistics and answers in normalised target units. Every export here wraps it in a serving model instead:

    raw features -> (x - shift) / scale, the job's mean/std or min/range as constants -> trained model
                 -> y * scale + shift, the job's target statistics                   (regression only)

The statistics are constants of the graph, taken from the job's own `normalization` record (never adapted
again), so whoever serves the export feeds the feature array as uploaded and reads targets in the units
uploaded. With no normalisation the serving model is the trained model under the same input name.

Each export is a `.tar.gz` holding the model and `card.json` (the job's model card as it was when the
export was made):

- ``savedmodel``: the folder ``savedmodel/`` that ``tf.saved_model.load`` and TensorFlow Serving read; its
  ``serving_default`` signature takes ``features`` and answers ``{"output_0": predictions}``.
- ``keras-serving``: ``model.keras``, the serving model as a Keras file (built-in layers only: it loads
  with ``keras.models.load_model`` in safe mode).
- ``onnx``: ``model.onnx``, made by Keras' own ``model.export(format="onnx")`` (tf2onnx under the
  TensorFlow backend); its one input is ``features``.

``export_model(checkpoint, out, fmt, ...)`` writes one archive; ``serving_model`` builds the wrapped model.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from trainyard.names import EXPORT_FORMATS

logger = logging.getLogger(__name__)

ARCHIVE_ROOT = "savedmodel"
#: What the worker exports when a job succeeds, in this order (the cheapest first).
FORMATS = EXPORT_FORMATS
CARD_NAME = "card.json"
INPUT_NAME = "features"


def _reset(info: tarfile.TarInfo) -> tarfile.TarInfo:
    # Nothing about the worker machine (user names, file times) goes into a file users download.
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    return info


def _scale_of(stats: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """(shift, scale) of one side of `normalization`: normalised = (raw - shift) / scale."""
    if stats["method"] == "standardize":
        return np.asarray(stats["mean"], dtype=np.float64), np.asarray(stats["std"], dtype=np.float64)
    if stats["method"] == "minmax":
        return np.asarray(stats["min"], dtype=np.float64), np.asarray(stats["range"], dtype=np.float64)
    raise ValueError(f"unknown normalisation method {stats['method']!r}")


def _fitted(values: np.ndarray, shape: tuple[int | None, ...]) -> list:
    """Statistics of one sample (features) or one target as a constant broadcasting over a batch of
    `shape`: they line up with its last axes (a scalar target's are one value)."""
    if values.ndim > len(shape) - 1:
        values = values.reshape(shape[1:])
    # float32, as the trainer applies them (workers/trainer/data.py `_Scaler.apply`).
    return values.astype(np.float32).tolist()


def _normalize(x: Any, stats: dict[str, Any], name: str) -> Any:
    """(raw - shift) / scale as the trainer computes it, with the statistics as graph constants.

    Rescaling layers rather than Normalization: Rescaling makes its constants inside the traced call, so
    they are part of the graph every export reads (Normalization's, made when it is built, are captured
    tensors that tf2onnx would turn into extra ONNX inputs). Two layers, not x * (1/scale) - shift/scale:
    subtracting first is the trainer's order and loses no digits to cancellation."""
    shift, scale = _scale_of(stats)
    shape = tuple(x.shape)
    x = keras.layers.Rescaling(1.0, offset=_fitted(-shift, shape), dtype="float32", name=f"{name}_shift")(x)
    return keras.layers.Rescaling(_fitted(1.0 / scale, shape), dtype="float32", name=f"{name}_scale")(x)


def _denormalize(y: Any, stats: dict[str, Any], name: str) -> Any:
    """normalised * scale + shift: a prediction in the target units uploaded."""
    shift, scale = _scale_of(stats)
    shape = tuple(y.shape)
    return keras.layers.Rescaling(_fitted(scale, shape), offset=_fitted(shift, shape), dtype="float32", name=name)(y)


def serving_model(model: keras.Model, normalization: dict[str, Any] | None) -> keras.Model:
    """`model` taking raw features and answering raw targets, the job's statistics fixed in the graph."""
    normalization = normalization or {}
    inputs_stats, target_stats = normalization.get("inputs"), normalization.get("targets")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError("a serving model wraps a model with one input and one output")
    shape = tuple(model.inputs[0].shape)
    dtype = "float32" if inputs_stats is not None else model.inputs[0].dtype
    raw = keras.Input(shape=shape[1:], dtype=dtype, name=INPUT_NAME)
    x = raw
    if inputs_stats is not None:
        x = _normalize(x, inputs_stats, "normalize_inputs")
    y = model(x)
    if target_stats is not None:
        y = _denormalize(y, target_stats, "denormalize_targets")
    return keras.Model(raw, y, name="serving")


def _write_model(model: keras.Model, fmt: str, folder: Path) -> None:
    if fmt == "savedmodel":
        model.export(str(folder / ARCHIVE_ROOT), format="tf_saved_model", verbose=False)
    elif fmt == "keras-serving":
        model.save(folder / "model.keras")
    elif fmt == "onnx":
        # The signature spelled out: Keras infers it only for a model that has been called, and a serving
        # model exported to ONNX alone (TRAINYARD_EXPORT_FORMATS=onnx) never has been.
        [tensor] = model.inputs
        signature = [keras.InputSpec(shape=tuple(tensor.shape), dtype=tensor.dtype, name=INPUT_NAME)]
        model.export(str(folder / "model.onnx"), format="onnx", verbose=False, input_signature=signature)
    else:
        raise ValueError(f"unknown export format {fmt!r}; one of {FORMATS}")


def _archive(folder: Path, card: dict[str, Any] | None, out: Path) -> tuple[int, str]:
    partial = out.with_name(out.name + ".part")
    with tarfile.open(partial, "w:gz") as tar:
        for path in sorted(folder.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(folder)), recursive=False, filter=_reset)
        if card is not None:
            data = json.dumps(card, indent=2, sort_keys=True).encode()
            info = _reset(tarfile.TarInfo(CARD_NAME))
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with open(partial, "rb") as fh:
        digest = hashlib.file_digest(fh, "sha256")
        os.fsync(fh.fileno())
    os.replace(partial, out)
    return out.stat().st_size, digest.hexdigest()


def write_export(model: keras.Model, fmt: str, out: str | Path, card: dict[str, Any] | None = None) -> tuple[int, str]:
    """Write `model` (a serving model) in format `fmt` with `card` to the archive `out`; (size, sha256)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f"{fmt}-") as tmp:
        folder = Path(tmp) / "archive"
        folder.mkdir()
        _write_model(model, fmt, folder)
        return _archive(folder, card, out)


def export_model(checkpoint: str | Path, out: str | Path, fmt: str = "savedmodel", *,
                 normalization: dict[str, Any] | None = None, card: dict[str, Any] | None = None) -> tuple[int, str]:
    """Write the serving model of `checkpoint` in format `fmt` to the archive `out`; (size, sha256).

    Loads the `.keras` file (not the in-memory model: what is exported is exactly what users download)."""
    model = keras.models.load_model(checkpoint, compile=False)
    return write_export(serving_model(model, normalization), fmt, out, card)


def export_savedmodel(checkpoint: str | Path, out: str | Path, normalization: dict[str, Any] | None = None,
                      card: dict[str, Any] | None = None) -> tuple[int, str]:
    """The SavedModel archive of `checkpoint`'s serving model; (size, sha256)."""
    return export_model(checkpoint, out, "savedmodel", normalization=normalization, card=card)


@dataclass
class Export:
    format: str
    path: Path
    size: int
    sha256: str


def export_all(model: keras.Model, out_dir: str | Path, epoch: int, *, card: dict[str, Any] | None = None,
               formats: tuple[str, ...] = FORMATS) -> Iterator[tuple[str, Export | Exception]]:
    """Every format of `model` (a serving model), one archive at a time, named after the checkpoint's epoch.

    Yields (format, its `Export`) as each is written, or (format, the exception it failed with): one
    format failing leaves the others to be made."""
    for fmt in formats:
        path = Path(out_dir) / f"epoch-{epoch:04d}.{fmt}.tar.gz"
        try:
            size, sha256 = write_export(model, fmt, path, card)
        except Exception as exc:  # noqa: BLE001 - reported to the caller, who logs it
            yield fmt, exc
            continue
        yield fmt, Export(fmt, path, size, sha256)
