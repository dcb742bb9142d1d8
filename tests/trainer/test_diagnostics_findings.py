"""The finding rules on hand-made numbers: each code fires when provoked and stays quiet when healthy."""
import json
import math

import numpy as np
import pytest

from workers.trainer.diagnostics.data_stats import scale_stats
from workers.trainer.diagnostics.findings import (
    RunContext,
    analyze_epochs,
    analyze_setup,
    check_diverged,
    check_exploding_gradients,
    check_loss_activation,
    check_overfitting,
    check_plateau,
    check_unscaled,
    check_vanishing_gradients,
    check_weights_not_changing,
    check_zero_gradients,
    merge,
)

from .specs import dataset_info, make_spec

VARIABLES = [
    {"layer": "dense_1", "name": "kernel", "shape": [784, 10]},
    {"layer": "dense_1", "name": "bias", "shape": [10]},
    {"layer": "dense_2", "name": "kernel", "shape": [10, 10]},
    {"layer": "dense_2", "name": "bias", "shape": [10]},
]
MLP = {"input_shape": [784], "layers": [{"type": "dense", "units": 10, "activation": "relu"},
                                        {"type": "dense", "units": 10, "activation": "softmax"}]}


# MLP's 10 outputs: class labels (softmax + sparse categorical crossentropy), or 10 values to regress.
CLASSES = dataset_info(input_shape=(784,), n_classes=10)
VALUES = dataset_info(input_shape=(784,), target_shape=(10,))
ONE_VALUE = dataset_info(input_shape=(4,))


def ctx(info=CLASSES, **overrides) -> RunContext:
    spec = make_spec(info, **{"model": MLP, **overrides})
    return RunContext(spec, [dict(v) for v in VARIABLES])


def var(layer_name, name, *, grad=0.5, weight=2.0, update=0.02, zero=0.0):
    return {"layer": layer_name, "name": name, "grad_norm": grad, "weight_norm": weight, "update_norm": update,
            "update_ratio": update / weight if weight else None, "zero_grad_fraction": zero}


def healthy(epoch, loss=1.0, val_loss=None, lr=0.01, **kw):
    return {"epoch": epoch, "learning_rate": lr, "loss": loss, "val_loss": val_loss,
            "variables": [var(v["layer"], v["name"], **kw) for v in VARIABLES]}


def codes(items):
    return sorted(f["code"] for f in items)


def test_healthy_run_has_no_findings():
    epochs = [healthy(e, loss=1.0 / e, val_loss=1.1 / e) for e in range(1, 16)]
    assert analyze_epochs(epochs, ctx()) == []


def test_weights_not_changing_at_a_tiny_learning_rate_is_lr_too_small():
    # Adam at 1e-10: the kernels do not move at all, zero-initialised biases move by ~1e-9 (ratio 1).
    epochs = []
    for e in (1, 2, 3):
        rec = healthy(e, lr=1e-10, update=0.0)
        rec["variables"][1] = var("dense_1", "bias", weight=1e-9, update=1e-9)
        epochs.append(rec)
    [f] = check_weights_not_changing(epochs, ctx(optimizer={"type": "adam", "learning_rate": 1e-10}))
    assert f["code"] == "lr_too_small" and f["severity"] == "error"
    # From the evidence, not the optimizer's default: Adam moves each element about lr per step, so the
    # dense_1 kernel (7840 elements, norm 2) moves lr * sqrt(7840) / 2 of its norm per step; the rate that
    # makes that 1e-3 is 1e-3 * 2 / sqrt(7840).
    assert f["suggested_change"] == {"optimizer": {"learning_rate": pytest.approx(2.3e-5)}}
    assert f["suggested_change_basis"] == "update_ratio" and f["id"] == "lr_too_small:-"
    assert f["evidence"]["rate"]["source"] == "adaptive_step_estimate"
    assert f["evidence"]["learning_rate"] == 1e-10 and f["epoch"] == 3
    json.dumps(f)


def test_weights_not_changing_at_a_normal_rate():
    # Tiny gradients (1e-3 on weights of norm 2): an SGD step at 0.01 moves 5e-6 of the norm, so the rate
    # for 1e-3 per step is 0.01 * 1e-3 / 5e-6 = 2.0.
    epochs = [healthy(e, lr=0.01, update=1e-9, grad=1e-3) for e in (1, 2)]
    [f] = check_weights_not_changing(epochs, ctx(optimizer={"type": "sgd"}))
    assert f["code"] == "weights_not_changing"
    assert f["suggested_change"]["optimizer"]["learning_rate"] == pytest.approx(2.0)
    assert f["suggested_change_basis"] == "update_ratio"
    # Gradients that should move the weights at this rate but do not: a larger rate is not what the
    # evidence says, so no rate is suggested (the gradient findings say more).
    epochs = [healthy(e, lr=0.01, update=1e-9) for e in (1, 2)]
    [f] = check_weights_not_changing(epochs, ctx(optimizer={"type": "sgd"}))
    assert f["suggested_change"] is None and f["suggested_change_basis"] is None


def test_weights_not_changing_quiet_when_any_epoch_moved_or_no_gradients_at_all():
    epochs = [healthy(1), healthy(2, update=1e-9)]  # a decayed rate late in training is fine
    assert check_weights_not_changing(epochs, ctx()) == []
    dead = [healthy(1, update=0.0, zero=1.0, grad=0.0)]
    assert check_weights_not_changing(dead, ctx()) == []  # zero_gradients explains it


def test_diverged_on_nan_names_epoch_and_rate():
    [f] = check_diverged([healthy(1), healthy(2)], ctx(), nan={"epoch": 3, "learning_rate": 5.0})
    assert f["code"] == "diverged" and f["severity"] == "error" and f["epoch"] == 3
    assert "epoch 3" in f["message"] and "5" in f["message"]
    # A tenth of the rate that diverged, but never above the optimizer's default (adam: 0.001).
    assert f["suggested_change"]["optimizer"] == {"learning_rate": 0.001, "clipnorm": 1.0, "clipvalue": None}
    assert f["suggested_change_basis"] == "divergence"
    [f] = check_diverged([], ctx(), nan={"epoch": 3, "learning_rate": 5e-4})
    assert f["suggested_change"]["optimizer"]["learning_rate"] == pytest.approx(5e-5)


def test_diverged_when_loss_grows_by_orders_of_magnitude():
    epochs = [healthy(1, loss=2.0), healthy(2, loss=1.5), healthy(3, loss=400.0)]
    [f] = check_diverged(epochs, ctx())
    assert f["epoch"] == 3 and f["evidence"]["best_epoch"] == 2
    assert check_diverged(epochs[:2] + [healthy(3, loss=20.0)], ctx()) == []


def test_exploding_gradients():
    epochs = [healthy(1, grad=5e4)]
    [f] = check_exploding_gradients(epochs, ctx())
    assert f["code"] == "exploding_gradients" and f["suggested_change"] == {
        "optimizer": {"clipnorm": 1.0, "clipvalue": None}}
    rec = healthy(2)
    rec["variables"][0]["grad_norm"] = math.inf
    assert codes(check_exploding_gradients([rec], ctx())) == ["exploding_gradients"]
    assert check_exploding_gradients([healthy(1, grad=50.0)], ctx()) == []


def _deep(activation):
    layers = [{"type": "dense", "units": 32, "activation": activation} for _ in range(4)] + [
        {"type": "dense", "units": 1, "activation": None}]  # null: Keras' linear, as the spec stores it
    variables = [{"layer": f"dense_{i}", "name": "kernel", "shape": [32, 32 if i < 5 else 1]}
                 for i in range(1, 6)]
    return RunContext(make_spec(dataset_info(input_shape=(32,)), model={"layers": layers}), variables)


def test_vanishing_gradients_shrinking_towards_the_input():
    context = _deep("sigmoid")
    grads = [1e-7, 1e-6, 1e-4, 1e-3, 1e-2]
    rec = {"epoch": 1, "learning_rate": 0.01, "loss": 1.0, "variables": [
        var(f"dense_{i}", "kernel", grad=g) for i, g in enumerate(grads, start=1)]}
    [f] = check_vanishing_gradients([rec], context)
    assert f["layer"] == "dense_1" and f["severity"] == "warning"
    layers = f["suggested_change"]["model"]["layers"]
    assert [l["activation"] for l in layers] == ["relu"] * 4 + ["linear"]
    healthy_rec = {**rec, "variables": [var(f"dense_{i}", "kernel", grad=0.1) for i in range(1, 6)]}
    assert check_vanishing_gradients([healthy_rec], context) == []


def test_zero_gradients_names_the_zero_initialised_layer():
    spec_layers = [{"type": "dense", "units": 10, "activation": "relu", "kernel_initializer": "zeros"},
                   {"type": "dense", "units": 10, "activation": "softmax"}]
    context = RunContext(make_spec(CLASSES, model={"layers": spec_layers}), VARIABLES)
    rec = healthy(1)
    rec["variables"][0] = var("dense_1", "kernel", grad=0.0, weight=0.0, update=0.0, zero=1.0)
    rec["variables"][1] = var("dense_1", "bias", grad=0.0, weight=0.0, update=0.0, zero=1.0)
    rec["variables"][2] = var("dense_2", "kernel", grad=0.0, zero=1.0)
    found = {f["layer"]: f for f in check_zero_gradients([rec], context)}
    assert set(found) == {"dense_1", "dense_2"}
    first = found["dense_1"]
    assert "model.layers[0] (dense_1)" in first["message"] and "zeros" in first["message"]
    assert first["suggested_change"]["model"]["layers"][0]["kernel_initializer"] == "he_uniform"
    assert "inputs are all zero" in found["dense_2"]["message"]
    assert check_zero_gradients([healthy(1)], ctx()) == []


def test_unscaled_inputs_and_targets_from_raw_data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 8)) * 100
    y = rng.normal(size=200) * 1000 + 5000
    stats = scale_stats(x, y)
    regression = ctx(VALUES)
    assert codes(check_unscaled(stats, regression)) == ["unscaled_inputs", "unscaled_targets"]
    f = check_unscaled(stats, regression)[0]
    assert f["suggested_change"] == {"dataset": {"normalize": "standardize"}}
    # Quiet when the spec normalises, and on scaled data.
    normalised = ctx(VALUES, dataset={"normalize": "standardize", "normalize_targets": "standardize"})
    assert check_unscaled(stats, normalised) == []
    assert check_unscaled(scale_stats(x / 100, y / 1e4), regression) == []
    # Class labels have no scale; token ids neither.
    assert scale_stats(x, np.arange(200) % 3, classification=True)["targets"] is None
    assert scale_stats(x, y, integer_inputs=True)["inputs"] is None


def test_scale_stats_match_float64_numpy_on_every_kind_of_input():
    rng = np.random.default_rng(1)
    cases = {
        "float32": rng.normal(size=(5000, 3, 4)).astype(np.float32) * 3 + 2,
        "float64 with a huge offset": rng.normal(size=(3000, 5)) * 1e3 + 1e8,
        "float32 with a huge offset": (rng.normal(size=(3000, 5)) * 1e3 + 1e8).astype(np.float32),
        "uint8 pixels": rng.integers(0, 256, size=(4100, 28, 28)).astype(np.uint8),
        "int64": rng.integers(-1000, 1000, size=(100, 2)),
    }
    for what, a in cases.items():
        stats = scale_stats(a, a[:, :1].reshape(len(a), -1))["inputs"]
        rows = a[::-(-len(a) // 2048)].reshape(-1, int(np.prod(a.shape[1:]))).astype(np.float64)
        assert stats["rows_sampled"] == len(rows) <= 2048, what
        np.testing.assert_allclose(stats["max_abs_mean"], np.abs(rows.mean(0)).max(), rtol=1e-6, err_msg=what)
        np.testing.assert_allclose(stats["max_std"], rows.std(0).max(), rtol=1e-4, err_msg=what)
        assert (stats["min"], stats["max"]) == (rows.min(), rows.max()), what
        assert stats["finite"], what
    for bad in (np.nan, np.inf, -np.inf):
        a = np.ones((10, 3), dtype=np.float32)
        a[4, 1] = bad
        assert scale_stats(a, a)["inputs"]["finite"] is False


def test_loss_activation_mismatch_for_what_validation_lets_through():
    softmax_mse = ctx(VALUES)
    [f] = check_loss_activation(softmax_mse, 10, None)
    assert f["code"] == "loss_activation_mismatch" and f["severity"] == "warning"
    assert f["suggested_change"]["model"]["layers"][-1]["activation"] == "linear"
    assert f["layer"] == "dense_2"
    one_unit = RunContext(make_spec(ONE_VALUE, model={"layers": [
        {"type": "dense", "units": 1, "activation": "softmax"}]}), [])
    assert check_loss_activation(one_unit, 1, None)[0]["severity"] == "error"
    # Targets beyond a sigmoid's range are label_out_of_range (tests/trainer/test_data_checks.py), judged
    # on the targets as trained; not a loss/activation mismatch.
    sigmoid_wide = RunContext(make_spec(ONE_VALUE, model={"layers": [
        {"type": "dense", "units": 1, "activation": "sigmoid"}]}), [])
    assert check_loss_activation(sigmoid_wide, 1, {"min": 0.0, "max": 300.0}) == []
    # The usual pairs are quiet.
    assert check_loss_activation(ctx(), 10, None) == []
    linear_mse = RunContext(make_spec(ONE_VALUE, model={"layers": [{"type": "dense", "units": 1}]}), [])
    assert check_loss_activation(linear_mse, 1, {"min": -5.0, "max": 300.0}) == []
    assert analyze_setup(linear_mse, None, 1) == []


def test_plateau_only_without_schedule_or_plateau_callback():
    flat = [healthy(1, loss=1.0)] + [healthy(e, loss=0.5) for e in range(2, 14)]
    [f] = check_plateau(flat, ctx())
    assert f["code"] == "plateau" and f["severity"] == "info"
    assert f["evidence"]["epochs_without_improvement"] == 11
    assert "reduce_lr_on_plateau" in f["suggested_change"]["callbacks"]
    with_callback = ctx(callbacks={"reduce_lr_on_plateau": {"monitor": "loss"}})
    assert check_plateau(flat, with_callback) == []
    assert check_plateau(flat, ctx(schedule={"type": "cosine_decay", "decay_steps": 10})) == []
    improving = [healthy(e, loss=1.0 / e) for e in range(1, 14)]
    assert check_plateau(improving, ctx()) == []


def test_overfitting_val_loss_rising_while_loss_falls():
    val = [1.0, 0.8, 0.7, 0.75, 0.85, 0.95]
    epochs = [healthy(e, loss=1.0 / e, val_loss=v) for e, v in enumerate(val, start=1)]
    [f] = check_overfitting(epochs, ctx())
    assert f["evidence"]["best_epoch"] == 3 and f["epoch"] == 6
    assert f["suggested_change"]["callbacks"]["early_stopping"]["restore_best_weights"] is True
    both_fall = [healthy(e, loss=1.0 / e, val_loss=1.1 / e) for e in range(1, 7)]
    assert check_overfitting(both_fall, ctx()) == []


def test_merge_keeps_one_finding_per_code_and_layer():
    a = check_exploding_gradients([healthy(1, grad=5e4)], ctx())
    b = check_exploding_gradients([healthy(2, grad=6e4)], ctx())
    [merged] = merge(a, b)
    assert merged["epoch"] == 2
