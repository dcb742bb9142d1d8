"""Preflight: fails fast on NaN and on all-zero gradients, and leaves the real run untouched."""
import keras
import numpy as np
import pytest

from workers.trainer import InMemoryReporter, TrainData, train
from workers.trainer.diagnostics.findings import RunContext
from workers.trainer.layers import build_model
from workers.trainer.losses import build_loss
from workers.trainer.optimizers import build_optimizer
from workers.trainer.preflight import preflight

from .specs import dataset_info, make_spec


DEAD_RELU = {"layers": [{"type": "dense", "units": 8, "activation": "relu"},
                        {"type": "dense", "units": 3, "activation": "relu", "kernel_initializer": "zeros"}]}


def _one_hot(data):
    return TrainData(data.x_train, np.eye(3, dtype=np.float32)[data.y_train])


def _regression(scale=300.0):
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(128, 4)) * scale).astype(np.float32)
    y = (x @ np.array([3.0, -2.0, 1.0, 5.0], dtype=np.float32)) * 10
    return TrainData(x, y)


def test_nan_loss_fails_fast_with_diverged(tmp_path):
    data = _regression()
    spec = make_spec(data, optimizer={"type": "sgd", "learning_rate": 10.0},
                     training={"epochs": 50, "batch_size": 32})
    reporter = InMemoryReporter()
    result = train(spec, data, reporter, tmp_path)
    assert result.stop_reason == "nan_loss" and result.epochs_run == 0
    assert reporter.epochs == [] and reporter.should_stop_calls == 0  # fit never started
    found = reporter.findings_by_key[("diverged", None)]
    assert found["severity"] == "error" and "preflight" in found["message"]
    assert found["evidence"]["learning_rate"] == pytest.approx(10.0)
    # Not a tenth of an absurd rate: capped at SGD's default rate, with clipping.
    assert found["suggested_change"]["optimizer"]["learning_rate"] == pytest.approx(0.01)
    assert found["suggested_change_basis"] == "divergence"
    assert reporter.result is result


def test_all_zero_gradients_fail_fast_with_zero_gradients(tmp_path, classification_data):
    # A zero-initialised relu output layer: relu'(0) = 0, so no variable anywhere gets a gradient.
    data = _one_hot(classification_data)
    spec = make_spec(data, model=DEAD_RELU, loss="mse", metrics=[], training={"epochs": 50})
    reporter = InMemoryReporter()
    result = train(spec, data, reporter, tmp_path)
    assert result.stop_reason == "no_gradients" and result.epochs_run == 0 and reporter.epochs == []
    layers = {layer_name for code, layer_name in reporter.findings_by_key if code == "zero_gradients"}
    assert layers == {"dense_1", "dense_2"}
    assert all(f["severity"] == "error" for f in reporter.findings_by_key.values()
               if f["code"] == "zero_gradients")


@pytest.mark.parametrize("opt", [{"type": "adam", "learning_rate": 0.01},
                                 {"type": "adamw", "learning_rate": 0.01, "weight_decay": 0.1}],
                         ids=["adam", "adamw-decay-moves-weights-without-gradients"])
def test_zero_gradients_are_found_whatever_the_optimizer_does_with_them(classification_data, opt):
    data = _one_hot(classification_data)
    spec = make_spec(data, model=DEAD_RELU, loss="mse", metrics=[], optimizer=opt)
    model = build_model(spec)
    model.compile(optimizer=build_optimizer(spec["optimizer"], spec["schedule"], 2), loss=build_loss("mse"))
    checked = preflight(model, spec, data.x_train, data.y_train, context=RunContext(spec))
    assert checked.stop_reason == "no_gradients" and checked.findings


def test_a_healthy_model_pays_no_gradient_measurement(classification_data):
    """Steps that moved a weight had gradients: the probe is not called at all."""
    from workers.trainer.diagnostics.probe import ProbeMeasure, trainable_variables

    spec = make_spec(classification_data)  # 8 relu units, then a softmax over the 3 classes
    model = build_model(spec)
    model.compile(optimizer=build_optimizer(spec["optimizer"], spec["schedule"], 2), loss=build_loss(spec["loss"]))
    measure = ProbeMeasure(model, build_loss(spec["loss"]), trainable_variables(model))
    checked = preflight(model, spec, classification_data.x_train, classification_data.y_train,
                        context=RunContext(spec), measure=measure)
    assert checked.ok and len(checked.losses) == 3 and measure._calls == 0


def test_preflight_can_be_switched_off(tmp_path):
    data = _regression()
    spec = make_spec(data, model={"layers": [{"type": "dense", "units": 1}]},
                     optimizer={"type": "sgd", "learning_rate": 10.0}, training={"epochs": 1, "batch_size": 32},
                     diagnostics={"enabled": False, "preflight": False})
    reporter = InMemoryReporter()
    result = train(spec, data, reporter, tmp_path)
    assert result.stop_reason == "nan_loss"  # found by TerminateOnNaN during fit instead
    assert reporter.should_stop_calls > 0


def test_preflight_restores_every_variable():
    keras.utils.set_random_seed(1)
    spec = make_spec(dataset_info(input_shape=(4,), n_classes=3), model={"layers": [
        {"type": "dense", "units": 8, "activation": "relu"}, {"type": "dropout", "rate": 0.5},
        {"type": "batch_normalization"}, {"type": "dense", "units": 3, "activation": "softmax"}]},
        optimizer={"type": "adam", "learning_rate": 0.1})
    model = build_model(spec)
    model.compile(optimizer=build_optimizer(spec["optimizer"], spec["schedule"], 2),
                  loss=build_loss(spec["loss"]))
    before = [v.numpy().copy() for v in model.variables]
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 4)).astype(np.float32), rng.integers(0, 3, size=32)
    checked = preflight(model, spec, x, y, context=RunContext(spec))
    assert checked.ok and len(checked.losses) == 3
    assert checked.losses[-1] < checked.losses[0]  # it really trained
    for v, b in zip(model.variables, before):
        np.testing.assert_array_equal(v.numpy(), b, err_msg=v.path)
    # The optimizer is built as fit would build it, and left as if it had never stepped.
    assert model.optimizer.built and int(model.optimizer.iterations.numpy()) == 0
    assert all(not np.any(v.numpy()) for v in model.optimizer.variables
               if v is not model.optimizer.iterations and "learning_rate" not in v.path)


def test_run_after_preflight_equals_run_without_it(tmp_path):
    """Weights, optimizer state and random stream (dropout, shuffling) are exactly as without it."""
    rng = np.random.default_rng(2)
    data = TrainData(rng.normal(size=(96, 6)).astype(np.float32), rng.integers(0, 3, size=96))
    options = dict(model={"layers": [
        {"type": "dense", "units": 12, "activation": "relu"}, {"type": "dropout", "rate": 0.4},
        {"type": "batch_normalization"}, {"type": "dense", "units": 3, "activation": "softmax"}]},
        optimizer={"type": "adam", "learning_rate": 0.01},
        training={"epochs": 3, "batch_size": 16, "seed": 9, "shuffle": True})
    runs = []
    for flag in (True, False):
        reporter = InMemoryReporter()
        s = make_spec(data, diagnostics={"enabled": True, "preflight": flag}, **options)
        train(s, data, reporter, tmp_path / str(flag))
        model = keras.models.load_model(tmp_path / str(flag) / "checkpoints" / "epoch-0003.keras")
        runs.append((model.get_weights(), [v.numpy() for v in model.optimizer.variables],
                     [logs["loss"] for _, logs in reporter.epochs]))
    (w1, o1, l1), (w2, o2, l2) = runs
    assert l1 == l2
    for a, b in zip(w1, w2):
        np.testing.assert_array_equal(a, b)
    assert len(o1) == len(o2) > 0
    for a, b in zip(o1, o2):
        np.testing.assert_array_equal(a, b)
