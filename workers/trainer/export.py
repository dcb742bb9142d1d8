"""The best checkpoint as a TensorFlow SavedModel, archived for download and serving.

``export_savedmodel(checkpoint, out)`` loads the ``.keras`` file (not the in-memory model: what is
exported is exactly what users download) and writes ``out`` as a ``.tar.gz`` whose single top-level
folder ``savedmodel/`` is what ``tf.saved_model.load`` and TensorFlow Serving read. Its
``serving_default`` signature takes the model's input and answers ``{"output_0": predictions}``.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import tempfile
from pathlib import Path

import keras

ARCHIVE_ROOT = "savedmodel"


def _reset(info: tarfile.TarInfo) -> tarfile.TarInfo:
    # Nothing about the worker machine (user names, file times) goes into a file users download.
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    return info


def export_savedmodel(checkpoint: str | Path, out: str | Path) -> tuple[int, str]:
    """Write the SavedModel of ``checkpoint`` to the archive ``out``; return its (size, sha256)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = keras.models.load_model(checkpoint, compile=False)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix="savedmodel-") as tmp:
        folder = Path(tmp) / ARCHIVE_ROOT
        model.export(str(folder), format="tf_saved_model", verbose=False)
        partial = out.with_name(out.name + ".part")
        with tarfile.open(partial, "w:gz") as tar:
            for path in sorted(folder.rglob("*")):
                tar.add(path, arcname=str(path.relative_to(tmp)), recursive=False, filter=_reset)
        digest = hashlib.sha256()
        with open(partial, "rb") as fh:
            for block in iter(lambda: fh.read(1024 * 1024), b""):
                digest.update(block)
            os.fsync(fh.fileno())
        os.replace(partial, out)
    return out.stat().st_size, digest.hexdigest()
