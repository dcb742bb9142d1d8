"""The measuring callback and the engine with diagnostics on, on tiny arrays."""
import json

import keras
import numpy as np
import pytest

from workers.trainer import InMemoryReporter, TrainData, train
from workers.trainer.diagnostics.probe import ProbeMeasure, probe_batch, trainable_variables
from workers.trainer.layers import build_model
from workers.trainer.losses import build_loss

from .specs import dataset_info, make_spec

MLP_784 = {"input_shape": [784], "layers": [{"type": "dense", "units": 10, "activation": "relu"},
                                            {"type": "dense", "units": 10, "activation": "softmax"}]}
SGD = {"type": "sgd", "learning_rate": 0.01}


def test_trainable_variables_are_named_by_layer():
    spec = make_spec(dataset_info(input_shape=(5, 4), n_classes=2), model={"layers": [
        {"type": "bidirectional", "layer": {"type": "lstm", "units": 3}},
        {"type": "dense", "units": 2, "activation": "softmax"}]})
    described = [t.describe() for t in trainable_variables(build_model(spec))]
    assert described[0] == {"layer": "bidirectional_1", "name": "forward_lstm/lstm_cell/kernel", "shape": [4, 12]}
    assert {(d["layer"], d["name"]) for d in described} >= {("bidirectional_1", "backward_lstm/lstm_cell/bias"),
                                                            ("dense_2", "kernel"), ("dense_2", "bias")}
    assert len({(d["layer"], d["name"]) for d in described}) == len(described) == 8


def test_probe_measure_numbers_and_no_side_effects():
    keras.utils.set_random_seed(0)
    spec = make_spec(dataset_info(input_shape=(4,), n_classes=2), model={"layers": [
        {"type": "dense", "units": 3, "activation": "relu"}, {"type": "dropout", "rate": 0.5},
        {"type": "dense", "units": 2, "activation": "softmax"}]})
    model = build_model(spec)
    tracked = trainable_variables(model)
    measure = ProbeMeasure(model, build_loss("sparse_categorical_crossentropy"), tracked)
    x = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    y = np.array([0, 1] * 4)
    before_values = [v.numpy().copy() for v in model.variables]
    before = measure.snapshot()
    tracked[0].variable.assign(tracked[0].variable.numpy() + 1.0)  # a known update of 1 per entry
    loss, rows = measure.measure(*probe_batch(x, y), before)
    kernel = rows[0]
    assert kernel["update_norm"] == pytest.approx(np.sqrt(12), rel=1e-5)
    assert kernel["weight_norm"] == pytest.approx(np.linalg.norm(tracked[0].variable.numpy()), rel=1e-5)
    assert kernel["update_ratio"] == pytest.approx(kernel["update_norm"] / kernel["weight_norm"])
    assert rows[1]["update_ratio"] is None and rows[1]["weight_norm"] == 0  # zero bias, not moved
    # Manual gradient agrees.
    import tensorflow as tf
    with tf.GradientTape() as tape:
        expected = build_loss("sparse_categorical_crossentropy")(y, model(x, training=False))
    grads = tape.gradient(expected, [t.variable.value for t in tracked])
    assert loss == pytest.approx(float(expected), rel=1e-6)
    for row, g in zip(rows, grads):
        assert row["grad_norm"] == pytest.approx(float(tf.norm(g)), rel=1e-5, abs=1e-9)
        assert row["zero_grad_fraction"] == pytest.approx(float(np.mean(g.numpy() == 0)))
    # The compiled function (used after the first EAGER_CALLS calls) gives the same numbers.
    from workers.trainer.diagnostics.probe import EAGER_CALLS
    for _ in range(EAGER_CALLS):
        measure.measure(*probe_batch(x, y), before)
    assert measure._calls > EAGER_CALLS
    compiled_loss, compiled_rows = measure.measure(*probe_batch(x, y), before)
    assert compiled_loss == pytest.approx(loss, rel=1e-6)
    for a, b in zip(rows, compiled_rows):
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-5, abs=1e-9)
        assert a["update_norm"] == pytest.approx(b["update_norm"], rel=1e-5)
        assert a["weight_norm"] == pytest.approx(b["weight_norm"], rel=1e-5)
        assert a["zero_grad_fraction"] == pytest.approx(b["zero_grad_fraction"])
    # Measuring changed nothing, not even the dropout seed state.
    after_values = [v.numpy() for v in model.variables]
    after_values[0] = after_values[0] - 1.0
    for a, b in zip(before_values, after_values):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_seed_like_mlp_updates_every_variable_every_epoch(tmp_path, mnist_like):
    spec = make_spec(mnist_like, model=MLP_784, optimizer=SGD, training={"epochs": 3, "batch_size": 32})
    reporter = InMemoryReporter()
    train(spec, mnist_like, reporter, tmp_path)
    assert reporter.info["variables"] == [
        {"layer": "dense_1", "name": "kernel", "shape": [784, 10]},
        {"layer": "dense_1", "name": "bias", "shape": [10]},
        {"layer": "dense_2", "name": "kernel", "shape": [10, 10]},
        {"layer": "dense_2", "name": "bias", "shape": [10]},
    ]
    assert [e for e, _ in reporter.diagnostics_records] == [1, 2, 3]
    for epoch, record in reporter.diagnostics_records:
        assert record["learning_rate"] == pytest.approx(0.01)
        assert record["loss"] == pytest.approx(dict(reporter.epochs)[epoch]["loss"])
        assert len(record["variables"]) == 4
        for v in record["variables"]:
            assert v["update_norm"] > 0 and v["grad_norm"] > 0 and v["weight_norm"] > 0, (epoch, v)
            assert v["zero_grad_fraction"] < 1.0
        json.dumps(record)
    assert reporter.finding_codes == set()


def test_adam_at_1e_10_is_lr_too_small(tmp_path, mnist_like):
    spec = make_spec(mnist_like, model=MLP_784, optimizer={"type": "adam", "learning_rate": 1e-10},
                     training={"epochs": 2, "batch_size": 32})
    reporter = InMemoryReporter()
    result = train(spec, mnist_like, reporter, tmp_path)
    found = reporter.findings_by_key[("lr_too_small", None)]
    # The rate from the evidence (Adam moves each element about lr per step; the dense_1 kernel, the
    # fastest-moving, should move 1e-3 of its norm per step), not the optimizer's default.
    rate = found["suggested_change"]["optimizer"]["learning_rate"]
    assert found["suggested_change_basis"] == "update_ratio" and 1e-6 < rate < 1e-2
    assert found["epoch"] == 1 or found["epoch"] == 2
    # diagnostics.on_error defaults to stop: found on epochs 1 and 2, it is confirmed and ends the run.
    assert result.stop_reason == "diagnosis" and result.error_code == "lr_too_small"


def test_unscaled_inputs_only_without_normalisation(tmp_path, mnist_like):
    scaled_up = TrainData(mnist_like.x_train * 100, mnist_like.y_train)
    options = dict(model=MLP_784, optimizer=SGD, training={"epochs": 1, "batch_size": 32})
    raw = InMemoryReporter()
    train(make_spec(scaled_up, **options), scaled_up, raw, tmp_path / "raw")
    assert "unscaled_inputs" in raw.finding_codes
    standardized = InMemoryReporter()
    train(make_spec(scaled_up, dataset={"normalize": "standardize"}, **options), scaled_up, standardized,
          tmp_path / "std")
    assert "unscaled_inputs" not in standardized.finding_codes


def test_zero_initialised_relu_layer_yields_zero_gradients_naming_it(tmp_path, mnist_like):
    model = {"input_shape": [784], "layers": [
        {"type": "dense", "units": 10, "activation": "relu", "kernel_initializer": "zeros"},
        {"type": "dense", "units": 10, "activation": "softmax"}]}
    reporter = InMemoryReporter()
    result = train(make_spec(mnist_like, model=model, optimizer=SGD, training={"epochs": 2, "batch_size": 32}),
                   mnist_like, reporter, tmp_path)
    assert result.stop_reason == "completed"  # the output bias still learns: not a preflight failure
    found = reporter.findings_by_key[("zero_gradients", "dense_1")]
    assert "dense_1" in found["message"] and found["severity"] == "warning"
    assert found["suggested_change"]["model"]["layers"][0]["kernel_initializer"] == "he_uniform"
    _, record = reporter.diagnostics_records[-1]
    assert [v["zero_grad_fraction"] for v in record["variables"][:2]] == [1.0, 1.0]


def test_nan_during_training_yields_diverged_with_epoch_and_rate(tmp_path):
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(256, 4)) * 300).astype(np.float32)
    y = (x @ np.array([3.0, -2.0, 1.0, 5.0], dtype=np.float32)) * 10
    data = TrainData(x, y)
    spec = make_spec(data, optimizer={"type": "sgd", "learning_rate": 1.0}, training={"epochs": 3, "batch_size": 32},
                     diagnostics={"enabled": True, "preflight": False})
    reporter = InMemoryReporter()
    result = train(spec, data, reporter, tmp_path)
    assert result.stop_reason == "nan_loss"
    found = reporter.findings_by_key[("diverged", None)]
    assert found["epoch"] == 1 and found["evidence"]["learning_rate"] == pytest.approx(1.0)
    # A tenth of the rate that diverged, capped at SGD's default rate (0.01): the cap is what applies here.
    assert found["suggested_change"]["optimizer"]["learning_rate"] == pytest.approx(0.01)
    assert found["suggested_change_basis"] == "divergence"
    assert {"unscaled_inputs", "unscaled_targets"} <= reporter.finding_codes


def test_diagnostics_off_reports_nothing_and_trains_the_same(tmp_path, mnist_like):
    options = dict(model={"layers": [
        {"type": "dense", "units": 16, "activation": "relu"}, {"type": "dropout", "rate": 0.3},
        {"type": "batch_normalization"}, {"type": "dense", "units": 10, "activation": "softmax"}]},
        training={"epochs": 2, "batch_size": 32, "seed": 4})
    weights = []
    for enabled in (True, False):
        reporter = InMemoryReporter()
        s = make_spec(mnist_like, diagnostics={"enabled": enabled, "preflight": False}, **options)
        train(s, mnist_like, reporter, tmp_path / str(enabled))
        assert bool(reporter.diagnostics_records) is enabled
        weights.append(keras.models.load_model(reporter.result.best_checkpoint).get_weights())
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)
