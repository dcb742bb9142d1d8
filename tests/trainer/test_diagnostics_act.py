"""Findings that act (issue 17): the stop rule (diagnostics.on_error), one coherent recommendation, stable
ids and evidence-based learning rates. Rules on hand-made numbers, the stop rule through the real engine on
tiny arrays."""
import numpy as np
import pytest

from trainyard.job_errors import DIAGNOSIS_CODES, JobError
from trainyard.lifecycle import end_of_run
from workers.trainer import InMemoryReporter, TrainData, train
from workers.trainer.diagnostics.findings import (
    CODES,
    STOPPING_CODES,
    RunContext,
    analyze_epochs,
    check_plateau,
    finding,
    reconcile,
    suggested_learning_rate,
)
from workers.trainer.types import TrainResult

from .specs import make_spec
from .test_diagnostics_findings import VARIABLES, ctx, healthy, var

MLP_784 = {"input_shape": [784], "layers": [{"type": "dense", "units": 10, "activation": "relu"},
                                            {"type": "dense", "units": 10, "activation": "softmax"}]}


def _stuck(epoch, lr=1e-10):
    # SGD at a tiny rate: kernels do not move in float32, zero-initialised biases do (ratio 1).
    rec = healthy(epoch, lr=lr, update=0.0, loss=2.3)
    rec["variables"][1] = var("dense_1", "bias", weight=1e-9, update=1e-9)
    return rec


# --- ids ---------------------------------------------------------------------------------------------


def test_every_finding_has_a_stable_unique_id():
    context = ctx(optimizer={"type": "sgd", "learning_rate": 1e-10})
    first = analyze_epochs([_stuck(1)], context)
    later = analyze_epochs([_stuck(1), _stuck(2), _stuck(3)], context)
    assert [f["id"] for f in first] == ["lr_too_small:-"]
    assert [f["id"] for f in later] == ["lr_too_small:-"]  # the same finding, epochs later
    assert first[0]["evidence"] != later[0]["evidence"]
    layered = finding("zero_gradients", "warning", "m", {}, layer="dense_1")
    assert layered["id"] == "zero_gradients:dense_1"
    ids = [finding(code, "info", "m", {}, layer=layer)["id"] for code in CODES for layer in (None, "dense_1")]
    assert len(set(ids)) == len(ids)


def test_a_suggested_change_always_names_its_basis():
    with pytest.raises(ValueError, match="basis"):
        finding("plateau", "info", "m", {}, suggested_change={"optimizer": {"learning_rate": 0.1}})
    assert finding("plateau", "info", "m", {})["suggested_change_basis"] is None


# --- evidence-based learning rate ---------------------------------------------------------------------


def test_suggested_rate_brings_the_update_ratio_to_1e_3_per_step():
    context = RunContext(ctx(optimizer={"type": "sgd", "learning_rate": 0.001}).spec, VARIABLES,
                         steps_per_epoch=10)
    # Measured: the dense_2 kernel moved 1e-4 of its norm in an epoch of 10 steps -> 1e-5 per step, so
    # the rate for 1e-3 is 100 times the current one.
    rec = healthy(1, lr=0.001, update=1e-4 * 2.0)
    rate, evidence = suggested_learning_rate(rec, context)
    assert rate == pytest.approx(0.1) and evidence["source"] == "measured_update"
    # Float32 ate the update: estimated from one SGD step, lr * |g| / |w| = 1e-10 * 0.5 / 2.
    rate, evidence = suggested_learning_rate(_stuck(1), ctx(optimizer={"type": "sgd", "learning_rate": 1e-10}))
    assert rate == pytest.approx(4e-3) and evidence["source"] == "gradient_step_estimate"
    # Never outside the spec's range, however absurd the evidence.
    huge = healthy(1, lr=0.01, update=0.0, grad=1e-12)
    assert suggested_learning_rate(huge, ctx(optimizer={"type": "sgd"}))[0] == 10.0


# --- one coherent recommendation ----------------------------------------------------------------------


def test_nothing_suggests_lowering_the_rate_while_it_is_too_small():
    context = ctx(optimizer={"type": "sgd", "learning_rate": 1e-10})
    epochs = [_stuck(e) for e in range(1, 14)]
    plateau = check_plateau(epochs, context)
    assert "reduce_lr_on_plateau" in plateau[0]["suggested_change"]["callbacks"]  # alone, it would
    found = {f["code"]: f for f in reconcile(analyze_epochs(epochs, context), context)}
    assert set(found) == {"lr_too_small", "plateau"}
    assert found["plateau"]["suggested_change"] is None and found["plateau"]["suggested_change_basis"] is None
    assert "lr_too_small" in found["plateau"]["message"] and "reduce_lr" not in found["plateau"]["message"]
    assert found["lr_too_small"]["suggested_change"]["optimizer"]["learning_rate"] > 1e-10
    # A lower rate from another finding (exploding gradients with clipping already on) is dropped too.
    clipped = ctx(optimizer={"type": "sgd", "learning_rate": 1e-10, "clipnorm": 1.0})
    rec = _stuck(1)
    rec["variables"][2] = var("dense_2", "kernel", grad=5e4, weight=2.0, update=0.0)
    found = {f["code"]: f for f in reconcile(analyze_epochs([rec], clipped), clipped)}
    assert "exploding_gradients" in found and found["exploding_gradients"]["suggested_change"] is None


def test_at_most_one_suggested_value_per_field():
    context = ctx(optimizer={"type": "sgd", "learning_rate": 0.01})
    a = finding("diverged", "error", "m", {}, suggested_change={"optimizer": {"learning_rate": 0.001,
                                                                             "clipnorm": 1.0}},
                basis="divergence")
    b = finding("exploding_gradients", "warning", "m", {}, layer="dense_1",
                suggested_change={"optimizer": {"learning_rate": 0.005, "clipnorm": 1.0}}, basis="gradient_norm")
    c = finding("unscaled_inputs", "warning", "m", {}, suggested_change={"dataset": {"normalize": "standardize"}},
                basis="data_scale")
    out = {f["code"]: f for f in reconcile([c, b, a], context)}
    assert out["diverged"]["suggested_change"] == {"optimizer": {"learning_rate": 0.001, "clipnorm": 1.0}}
    # The same value for a field is one value; a different one is dropped from the less severe finding.
    assert out["exploding_gradients"]["suggested_change"] == {"optimizer": {"clipnorm": 1.0}}
    assert out["unscaled_inputs"]["suggested_change"] == {"dataset": {"normalize": "standardize"}}
    values: dict = {}
    for f in out.values():
        for section, fields in (f["suggested_change"] or {}).items():
            for key, value in fields.items():
                assert values.setdefault((section, key), value) == value
    assert [f["code"] for f in reconcile([c, b, a], context)][0] == "diverged"  # errors first
    assert b["suggested_change"]["optimizer"]["learning_rate"] == 0.005  # the inputs are left alone


# --- the stop rule ------------------------------------------------------------------------------------


def test_stopping_codes_are_job_error_codes():
    assert set(STOPPING_CODES) == {c.value for c in DIAGNOSIS_CODES}
    assert all(JobError(code) for code in STOPPING_CODES)


def test_a_confirmed_error_stops_the_run_on_its_second_epoch(tmp_path, mnist_like):
    spec = make_spec(mnist_like, model=MLP_784, optimizer={"type": "sgd", "learning_rate": 1e-10},
                     training={"epochs": 8, "batch_size": 32})
    assert spec["diagnostics"]["on_error"] == "stop"  # the default
    reporter = InMemoryReporter()
    result = train(spec, mnist_like, reporter, tmp_path)
    assert result.stop_reason == "diagnosis" and result.epochs_run == 2
    assert result.error_code == "lr_too_small" and "lr_too_small:-" in result.error
    assert "on_error: continue" in result.error
    assert result.best_checkpoint is not None and result.best_epoch is not None  # kept
    found = reporter.findings_by_key[("lr_too_small", None)]
    assert found["suggested_change_basis"] == "update_ratio"
    assert 1e-4 <= found["suggested_change"]["optimizer"]["learning_rate"] <= 1
    # The lifecycle fails the job with the finding's code and message.
    end = end_of_run(result, result.epochs_run)
    assert end["status"] == "failed" and end["error_code"] == "lr_too_small"
    assert "too small" in end["error_message"]


def test_on_error_continue_trains_on(tmp_path, mnist_like):
    spec = make_spec(mnist_like, model=MLP_784, optimizer={"type": "sgd", "learning_rate": 1e-10},
                     training={"epochs": 3, "batch_size": 32}, diagnostics={"on_error": "continue"})
    reporter = InMemoryReporter()
    result = train(spec, mnist_like, reporter, tmp_path)
    assert result.stop_reason == "completed" and result.epochs_run == 3 and result.error_code is None
    assert reporter.findings_by_key[("lr_too_small", None)]["severity"] == "error"


def test_warnings_never_stop_a_run(tmp_path, mnist_like):
    scaled_up = TrainData(mnist_like.x_train * 100, mnist_like.y_train)
    spec = make_spec(scaled_up, model=MLP_784, optimizer={"type": "sgd", "learning_rate": 0.01},
                     training={"epochs": 3, "batch_size": 32})
    reporter = InMemoryReporter()
    result = train(spec, scaled_up, reporter, tmp_path)
    assert reporter.findings_by_key[("unscaled_inputs", None)]["severity"] == "warning"
    assert result.stop_reason in ("completed", "nan_loss")
    assert result.stop_reason != "diagnosis"


def test_an_error_found_before_training_stops_at_once(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 4)).astype(np.float32)
    data = TrainData(x, x @ np.array([1.0, -1.0, 0.5, 2.0], dtype=np.float32))
    # Softmax on one unit always outputs 1.0: the validator lets it through for mse, the setup check not.
    model = {"layers": [{"type": "dense", "units": 4, "activation": "relu"},
                        {"type": "dense", "units": 1, "activation": "softmax"}]}
    # Preflight off: with it on, its gradient check ends this run first (no_gradients, as before).
    spec = make_spec(data, model=model, training={"epochs": 3, "batch_size": 16},
                     diagnostics={"preflight": False})
    reporter = InMemoryReporter()
    result = train(spec, data, reporter, tmp_path)
    assert result.stop_reason == "diagnosis" and result.epochs_run == 0
    assert result.error_code == "loss_activation_mismatch" and "before training" in result.error
    assert reporter.epochs == []
    on = make_spec(data, model=model, training={"epochs": 1, "batch_size": 16},
                   diagnostics={"on_error": "continue", "preflight": False})
    assert train(on, data, InMemoryReporter(), tmp_path / "continue").stop_reason == "completed"


def test_an_unlisted_diagnosis_code_still_fails_with_a_listed_one():
    result = TrainResult(stop_reason="diagnosis", epochs_run=2, monitor="loss", best_epoch=1, best_value=1.0,
                         best_checkpoint=None, test_metrics=None, normalization=None, error="why",
                         error_code="plateau")
    assert end_of_run(result, 2)["error_code"] == "training_error"


def test_suggested_rates_are_clipped_to_the_range_the_spec_accepts() -> None:
    # The trainer may not import the spec package (tests/service/test_layering.py), so findings keep their
    # own copy of optimizer.learning_rate's range: this holds the two equal.
    from trainyard.spec.bounds import LEARNING_RATE
    from workers.trainer.diagnostics.findings import LEARNING_RATE_RANGE

    assert LEARNING_RATE_RANGE == (LEARNING_RATE.min, LEARNING_RATE.max)
