"""The exports of the final best checkpoint: made for runs that end well, before `finished`, in every
format, each predicting on raw inputs what the `.keras` file predicts on normalised ones (raw target units);
a failing export never fails the run."""
import json
import tarfile

import keras
import numpy as np
import tensorflow as tf

from workers.trainer import InMemoryReporter, train
from workers.trainer.export import FORMATS, export_savedmodel, serving_model, write_export

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


def _extract(path, into):
    with tarfile.open(path) as tar:
        tar.extractall(into, filter="data")
    return json.loads((into / "card.json").read_text())


def test_a_run_that_ends_well_exports_its_best_checkpoint(tmp_path, classification_data):
    import onnxruntime

    reporter = ExportingReporter()
    spec = make_spec(classification_data, training={"epochs": 2}, dataset={"normalize": "standardize"})
    result = train(spec, classification_data, reporter, tmp_path)
    assert [e["format"] for e in reporter.exports] == list(FORMATS)
    assert {e["epoch"] for e in reporter.exports} == {result.best_epoch}
    assert set(result.timings) >= {"export_savedmodel", "export_keras_serving", "export_onnx"}
    exports = {e["format"]: e["path"] for e in reporter.exports}

    stats = result.normalization["inputs"]
    raw = classification_data.x_train[:8]
    normalised = (raw - np.float32(stats["mean"])) / np.float32(stats["std"])
    want = keras.models.load_model(result.best_checkpoint).predict(normalised, verbose=0)

    card = _extract(exports["savedmodel"], tmp_path / "sm")
    # No database behind this reporter: the card holds what the trainer knows.
    assert card["best"]["epoch"] == result.best_epoch and card["normalization"] == result.normalization
    served = tf.saved_model.load(str(tmp_path / "sm" / "savedmodel"))
    predicted = served.signatures["serving_default"](features=tf.constant(raw))["output_0"]
    np.testing.assert_allclose(predicted.numpy(), want, rtol=1e-5, atol=1e-5)

    _extract(exports["keras-serving"], tmp_path / "ks")
    model = keras.models.load_model(tmp_path / "ks" / "model.keras", safe_mode=True)
    np.testing.assert_allclose(model.predict(raw, verbose=0), want, rtol=1e-5, atol=1e-5)

    _extract(exports["onnx"], tmp_path / "onnx")
    session = onnxruntime.InferenceSession(str(tmp_path / "onnx" / "model.onnx"))
    assert [i.name for i in session.get_inputs()] == ["features"]
    np.testing.assert_allclose(session.run(None, {"features": raw})[0], want, rtol=1e-5, atol=1e-5)


def test_serving_model_answers_in_raw_target_units(regression_data):
    stats = {"inputs": {"method": "minmax", "min": [1.0, 2.0, 3.0, 4.0], "range": [2.0, 4.0, 8.0, 1.0]},
             "targets": {"method": "standardize", "mean": [100.0], "std": [40.0]}}
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    raw = regression_data.x_train[:16]
    normalised = (raw - np.float32(stats["inputs"]["min"])) / np.float32(stats["inputs"]["range"])
    want = model.predict(normalised, verbose=0) * 40.0 + 100.0
    got = serving_model(model, stats).predict(raw, verbose=0)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


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


def test_per_pixel_statistics_of_images_are_constants_of_every_export(tmp_path):
    """Statistics shaped like one image (8, 8, 1), minmax-scaled, through a conv model; ONNX Runtime too."""
    import onnxruntime

    rng = np.random.default_rng(5)
    raw = rng.uniform(0, 255, size=(6, 8, 8, 1)).astype(np.float32)
    low, span = rng.uniform(0, 10, size=(8, 8, 1)), rng.uniform(200, 255, size=(8, 8, 1))
    stats = {"inputs": {"method": "minmax", "min": low.tolist(), "range": span.tolist()}, "targets": None}
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3, activation="relu"),
                              keras.layers.Flatten(), keras.layers.Dense(3, activation="softmax")])
    want = model.predict((raw - np.float32(low)) / np.float32(span), verbose=0)
    serving = serving_model(model, stats)
    np.testing.assert_allclose(serving.predict(raw, verbose=0), want, rtol=1e-5, atol=1e-5)
    write_export(serving, "onnx", tmp_path / "m.tar.gz")
    with tarfile.open(tmp_path / "m.tar.gz") as tar:
        assert tar.getnames() == ["model.onnx"]  # no card given, none written
        tar.extractall(tmp_path, filter="data")
    [got] = onnxruntime.InferenceSession(str(tmp_path / "model.onnx")).run(None, {"features": raw})
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_token_ids_stay_integers_and_unscaled():
    """An embedding's inputs are never normalised: the serving model takes the same int32 ids."""
    model = keras.Sequential([keras.Input((5,), dtype="int32"), keras.layers.Embedding(10, 4),
                              keras.layers.Flatten(), keras.layers.Dense(2)])
    serving = serving_model(model, None)
    assert serving.inputs[0].dtype == "int32" and serving.inputs[0].name == "features"
    ids = np.arange(10, dtype=np.int32).reshape(2, 5)
    np.testing.assert_array_equal(serving.predict(ids, verbose=0), model.predict(ids, verbose=0))


def test_only_the_formats_asked_for_are_made(tmp_path, classification_data):
    spec = make_spec(classification_data, training={"epochs": 1})
    onnx_only = ExportingReporter()
    result = train(spec, classification_data, onnx_only, tmp_path / "a", export_formats=("onnx",))
    assert [e["format"] for e in onnx_only.exports] == ["onnx"]
    assert "export_savedmodel" not in result.timings and "export_onnx" in result.timings

    none = ExportingReporter()
    result = train(spec, classification_data, none, tmp_path / "b", export_formats=())
    assert none.exports == [] and not any(phase.startswith("export") for phase in result.timings)
