"""The SavedModel export of the final best checkpoint: made for runs that end well, before `finished`,
predicting exactly like the `.keras` file; a failing export never fails the run."""
import tarfile

import keras
import numpy as np
import tensorflow as tf

from workers.trainer import InMemoryReporter, train
from workers.trainer.export import export_savedmodel

from .specs import make_spec


class ExportingReporter(InMemoryReporter):
    def __init__(self, fail=False, **kwargs):
        super().__init__(**kwargs)
        self.exports = []
        self.fail = fail

    def export_saved(self, fmt, epoch, path, size, sha256):
        if self.fail:
            raise OSError("store is down")
        assert self.result is None, "the export comes before finished()"
        self.exports.append({"format": fmt, "epoch": epoch, "path": path, "size": size, "sha256": sha256})


def test_a_run_that_ends_well_exports_its_best_checkpoint(tmp_path, classification_data):
    reporter = ExportingReporter()
    result = train(make_spec(classification_data, training={"epochs": 2}), classification_data, reporter, tmp_path)
    [export] = reporter.exports
    assert export["format"] == "savedmodel" and export["epoch"] == result.best_epoch
    with tarfile.open(export["path"]) as tar:
        tar.extractall(tmp_path / "out", filter="data")
    served = tf.saved_model.load(str(tmp_path / "out" / "savedmodel"))
    model = keras.models.load_model(result.best_checkpoint)
    x = classification_data.x_train[:8]
    [predicted] = served.signatures["serving_default"](tf.constant(x)).values()
    assert np.allclose(predicted.numpy(), model.predict(x, verbose=0), atol=1e-6)


def test_no_export_for_a_cancelled_run_and_a_failing_export_costs_nothing(tmp_path, classification_data):
    cancelled = ExportingReporter(stop_after_batches=3)
    spec = make_spec(classification_data, training={"epochs": 5})
    assert train(spec, classification_data, cancelled, tmp_path / "a").stop_reason == "cancelled"
    assert cancelled.exports == []

    failing = ExportingReporter(fail=True)
    result = train(make_spec(classification_data, training={"epochs": 1}), classification_data, failing, tmp_path / "b")
    assert result.stop_reason == "completed" and failing.result is result


def test_export_archive_has_one_folder_and_no_worker_details(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.save(tmp_path / "m.keras")
    size, sha256 = export_savedmodel(tmp_path / "m.keras", tmp_path / "m.tar.gz")
    assert size == (tmp_path / "m.tar.gz").stat().st_size and len(sha256) == 64
    with tarfile.open(tmp_path / "m.tar.gz") as tar:
        members = tar.getmembers()
    assert {m.name.split("/")[0] for m in members} == {"savedmodel"}
    assert all(m.uname == "" and m.mtime == 0 for m in members)
    assert not list(tmp_path.glob("*.part"))
