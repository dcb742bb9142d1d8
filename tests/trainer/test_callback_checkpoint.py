import hashlib

import keras
import numpy as np
import pytest

from workers.trainer import InMemoryReporter, build_model, train
from workers.trainer.callbacks import BestCheckpoint, RunState
from workers.trainer.callbacks.checkpoint import resolve_mode

from .specs import dataset_info, make_spec


def _compiled_model():
    model = build_model(make_spec(dataset_info(input_shape=(4,), n_classes=3)))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    # One step builds the optimizer's slots, as during real training, so the file holds them too.
    model.train_on_batch(np.zeros((2, 4), np.float32), np.zeros(2, np.int64))
    return model


def test_saves_only_on_improvement_atomically_and_reports(tmp_path):
    reporter = InMemoryReporter()
    callback = BestCheckpoint(tmp_path / "checkpoints", "val_loss", "min", reporter, RunState())
    callback.set_model(_compiled_model())
    for epoch, value in enumerate([0.9, 1.0, 0.5, 0.5, float("nan")]):
        callback.on_epoch_end(epoch, {"val_loss": value})
    files = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert files == ["epoch-0001.keras", "epoch-0003.keras"], "temp files or non-improving saves left"
    assert [(c["epoch"], c["value"]) for c in reporter.checkpoints] == [(1, 0.9), (3, 0.5)]
    for saved in reporter.checkpoints:
        blob = open(saved["path"], "rb").read()
        assert saved["size"] == len(blob)
        assert saved["sha256"] == hashlib.sha256(blob).hexdigest()
        assert saved["monitor"] == "val_loss"
    assert (callback.best_epoch, callback.best_value) == (3, 0.5)
    assert callback.best_path == tmp_path / "checkpoints" / "epoch-0003.keras"


def test_checkpoint_loads_with_plain_load_model_and_predicts_like_the_model(tmp_path):
    model = _compiled_model()
    callback = BestCheckpoint(tmp_path, "loss", "min", InMemoryReporter(), RunState())
    callback.set_model(model)
    callback.on_epoch_end(0, {"loss": 1.0})
    loaded = keras.models.load_model(callback.best_path)
    x = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)


def test_max_mode_partial_epochs_and_missing_monitor(tmp_path):
    state = RunState()
    reporter = InMemoryReporter()
    callback = BestCheckpoint(tmp_path, "val_accuracy", "auto", reporter, state)
    callback.set_model(_compiled_model())
    callback.on_epoch_end(0, {"val_accuracy": 0.5})
    callback.on_epoch_end(1, {"val_accuracy": 0.4})
    callback.on_epoch_end(2, {"loss": 0.1})  # monitor missing: skipped, not an error
    callback.on_epoch_end(3, None)
    state.request_stop("cancelled", partial=True)
    callback.on_epoch_end(4, {"val_accuracy": 0.9})  # cut-short epoch: never checkpointed
    assert [c["epoch"] for c in reporter.checkpoints] == [1]


@pytest.mark.parametrize("monitor, mode", [("val_loss", "min"), ("loss", "min"), ("val_accuracy", "max"),
                                           ("auc", "max"), ("val_rmse", "min"), ("recall", "max")])
def test_auto_mode(monitor, mode):
    assert resolve_mode(monitor, "auto") == mode


def test_engine_checkpoints_the_best_epoch_and_evaluates_it_on_test(tmp_path, classification_data):
    data = classification_data
    data.x_test, data.y_test = data.x_train[:16], data.y_train[:16]
    spec = make_spec(classification_data, dataset={"validation_split": 0.25},
                     callbacks={"checkpoint": {"monitor": "val_loss", "mode": "min"}},
                     optimizer={"type": "adam", "learning_rate": 0.01},
                     training={"epochs": 3})
    reporter = InMemoryReporter()
    result = train(spec, data, reporter, tmp_path)
    val_losses = [logs["val_loss"] for _, logs in reporter.epochs]
    assert result.monitor == "val_loss"
    assert result.best_epoch == 1 + int(np.argmin(val_losses))
    assert result.best_value == pytest.approx(min(val_losses))
    assert result.best_checkpoint == str(tmp_path / "checkpoints" / f"epoch-{result.best_epoch:04d}.keras")
    loaded = keras.models.load_model(result.best_checkpoint)
    direct = loaded.evaluate(data.x_test, data.y_test, verbose=0, return_dict=True)
    assert set(result.test_metrics) == {"loss", "accuracy"}
    assert result.test_metrics["loss"] == pytest.approx(direct["loss"], rel=1e-5)


def test_constructor_arguments_are_validated(tmp_path):
    with pytest.raises(ValueError):
        BestCheckpoint(tmp_path, "", "min", InMemoryReporter(), RunState())
    with pytest.raises(ValueError):
        BestCheckpoint(tmp_path, "loss", "lowest", InMemoryReporter(), RunState())
    with pytest.raises(TypeError):
        BestCheckpoint(tmp_path, "loss", "min", object(), RunState())


class _CorruptingReporter(InMemoryReporter):
    """Damages every checkpoint right after it is written, as a failing disk would."""

    def checkpoint_saved(self, epoch, monitor, value, path, size, sha256):
        super().checkpoint_saved(epoch, monitor, value, path, size, sha256)
        with open(path, "r+b") as fh:
            fh.truncate(size // 2)


def test_a_run_never_ends_well_with_a_best_checkpoint_that_does_not_load(tmp_path, classification_data):
    # No test split: nothing else would read the checkpoint back.
    spec = make_spec(classification_data, training={"epochs": 2})
    reporter = _CorruptingReporter()
    with pytest.raises(Exception):
        train(spec, classification_data, reporter, tmp_path)
    assert reporter.result.stop_reason == "error"
    healthy = train(spec, classification_data, InMemoryReporter(), tmp_path / "healthy")
    assert healthy.stop_reason == "completed"
