"""The learning-rate range test (workers/trainer/diagnostics/lr_range.py) and how the engine uses it."""
import math
import shutil

import keras
import numpy as np
import pytest

from trainyard.datasets.builtin import load_builtin
from trainyard.spec.bounds import LEARNING_RATE
from workers.trainer import InMemoryReporter, TrainData, train
from workers.trainer.diagnostics import lr_range
from workers.trainer.layers import build_model
from workers.trainer.losses import build_loss
from workers.trainer.optimizers import build_optimizer
from workers.trainer.types import ResumeState

from .specs import dataset_info, make_spec


def _data(n: int = 96, seed: int = 2) -> TrainData:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.3).astype(np.int64)
    return TrainData(x, y)


# --- the sweep and the rule, pure ------------------------------------------------------------------------


def test_rates_grow_exponentially_from_start_to_end():
    rates = [lr_range.rate_at(i, 100) for i in range(100)]
    assert rates[0] == pytest.approx(lr_range.START_RATE) and rates[-1] == pytest.approx(lr_range.END_RATE)
    ratios = np.diff(np.log(rates))
    np.testing.assert_allclose(ratios, ratios[0], rtol=1e-9)


@pytest.mark.parametrize("run_steps, expected", [(1, 20), (45, 45), (900, 100), (10**9, 100)])
def test_the_sweep_is_bounded(run_steps, expected):
    assert lr_range.planned_steps(run_steps) == expected


def test_the_range_matches_the_spec_bounds():
    # The trainer may not import the spec; its copy of the learning-rate range must agree with it.
    assert lr_range.LEARNING_RATE_RANGE == (LEARNING_RATE.min, LEARNING_RATE.max)


def test_valley_counts_the_longest_decreasing_subsequence_back_from_its_end():
    assert lr_range.valley([3, 2.9, 5, 2.5, 2.0, 1.0, 0.5, 4, 9]) == (0, 6)  # 6 points, ending at step 6
    # Noisy dips in the flat start join the subsequence, but the valley is its length back from the end.
    flat = [2.0, 1.99, 2.01, 1.98, 2.02, 1.97, 2.03, 1.96] + [1.9, 1.5, 1.0, 0.5] + [3.0]
    assert lr_range.valley(flat) == (2, 11)  # 9 points: 2.0, 1.99, 1.98, 1.97, 1.96, then the fall
    assert lr_range.valley([1, 2, 3]) == (0, 0)


def test_the_suggestion_sits_half_way_down_the_valley():
    rates = [lr_range.rate_at(i, 50) for i in range(50)]
    # Flat, then falling from step 10 to 35, then blowing up.
    losses = [2.3] * 10 + [2.3 - 0.08 * k for k in range(1, 26)] + [0.3 * 1.5 ** k for k in range(1, 16)]
    suggested = lr_range.suggest(rates, losses)
    start, end = lr_range.valley(losses)
    assert rates[start] < suggested < rates[end]
    assert suggested < rates[int(np.argmin(losses))]  # below the rate at the lowest loss


def test_a_suggestion_is_clipped_to_the_allowed_range_and_none_without_a_curve():
    assert lr_range.suggest([], []) is None
    assert lr_range.suggest([1e-12, 1e-11], [2.0, 3.0]) == lr_range.LEARNING_RATE_RANGE[0]


# --- the sweep on a model ---------------------------------------------------------------------------------


def _compiled(spec: dict) -> keras.Model:
    model = build_model(spec)
    model.compile(optimizer=build_optimizer(spec["optimizer"], None, 1), loss=build_loss(spec["loss"]))
    return model


def test_the_sweep_restores_every_variable_and_ends_at_divergence():
    keras.utils.set_random_seed(1)
    data = _data()
    spec = make_spec(data, model={"layers": [
        {"type": "dense", "units": 8, "activation": "relu"}, {"type": "dropout", "rate": 0.5},
        {"type": "batch_normalization"}, {"type": "dense", "units": 3, "activation": "softmax"}]})
    model = _compiled(spec)
    before = [v.numpy().copy() for v in model.variables]
    result = lr_range.range_test(model, data.x_train, data.y_train, 16, steps=100)
    # Six batches cycled for up to 100 steps, until rates near 10 blow the loss up.
    assert result.ended == "diverged" and 6 < len(result.rates) <= 100 and result.steps_planned == 100
    assert all(math.isfinite(loss) for loss in result.losses) and len(result.losses) == len(result.rates)
    assert min(result.losses) < result.losses[0]  # it really trained
    assert lr_range.START_RATE <= result.suggested < result.min_loss_rate
    for v, b in zip(model.variables, before):
        np.testing.assert_array_equal(v.numpy(), b, err_msg=v.path)
    assert int(model.optimizer.iterations.numpy()) == 0
    record = result.record()
    assert record["rule"] == "valley" and record["steps"] == len(record["curve"])
    assert set(record["curve"][0]) == {"learning_rate", "loss"}


def test_each_steps_loss_is_its_own_batch_loss_whatever_the_batch_sizes():
    """The sweep reads each step's loss out of the epoch's running mean; with batches of 16, 16 and 8
    (40 rows, cycled) and rates too small to move the weights yet, each is the untrained model's loss on
    that step's batch."""
    keras.utils.set_random_seed(3)
    data = _data(n=40)
    spec = make_spec(data)
    model = _compiled(spec)
    result = lr_range.range_test(model, data.x_train, data.y_train, 16, steps=20)
    order = np.random.default_rng(0).permutation(40)  # the sweep's fixed order of the rows
    x, y = data.x_train[order], data.y_train[order]
    loss = build_loss(spec["loss"])
    starts = [0, 16, 32, 0, 16, 32]
    ends = [16, 32, 40, 16, 32, 40]
    expected = [float(loss(y[a:b], model(x[a:b]))) for a, b in zip(starts, ends)]
    np.testing.assert_allclose(result.raw_losses[:6], expected, rtol=1e-4)
    assert lr_range._batch_sizes(40, 16, 7) == [16, 16, 8, 16, 16, 8, 16]


def test_a_stop_request_ends_the_sweep():
    data = _data()
    model = _compiled(make_spec(data))
    calls = []
    result = lr_range.range_test(model, data.x_train, data.y_train, 16, steps=50,
                                 should_stop=lambda: calls.append(1) or (len(calls) >= 3 and "cancelled"))
    assert result.ended == "stop_requested" and len(result.rates) == 3


# --- the engine -------------------------------------------------------------------------------------------

OPTIONS = dict(model={"layers": [
    {"type": "dense", "units": 12, "activation": "relu"}, {"type": "dropout", "rate": 0.4},
    {"type": "dense", "units": 3, "activation": "softmax"}]},
    training={"epochs": 3, "batch_size": 16, "seed": 9, "shuffle": True})


def test_a_run_with_the_range_test_trains_exactly_as_one_without(tmp_path):
    """On a copy of the state: weights, optimizer state and random stream are as without it."""
    data = _data()
    runs = []
    for flag in (True, False):
        reporter = InMemoryReporter()
        spec = make_spec(data, optimizer={"type": "adam", "learning_rate": 0.01},
                         diagnostics={"lr_range_test": flag}, **OPTIONS)
        result = train(spec, data, reporter, tmp_path / str(flag))
        runs.append(([logs["loss"] for _, logs in reporter.epochs], reporter, result))
    (with_test, reporter, result), (without, plain, plain_result) = runs
    assert with_test == without
    assert [logs["learning_rate"] for _, logs in reporter.epochs] == [pytest.approx(0.01)] * 3
    assert reporter.info["lr_range_test"]["curve"] and "learning_rate_chosen" not in reporter.info
    assert result.timings["lr_range_test"] > 0 and "lr_range_test" not in plain_result.timings
    assert "lr_range_test" not in plain.info


@pytest.mark.parametrize("schedule", [{"type": "constant"},
                                      {"type": "exponential_decay", "decay_steps": 1, "decay_rate": 0.5}])
def test_auto_trains_at_the_suggested_rate(tmp_path, schedule):
    data = _data()
    reporter = InMemoryReporter()
    spec = make_spec(data, optimizer={"type": "sgd", "learning_rate": "auto"}, schedule=schedule, **OPTIONS)
    assert spec["optimizer"]["learning_rate"] == "auto"
    result = train(spec, data, reporter, tmp_path)
    assert result.stop_reason == "completed"
    chosen = reporter.info["learning_rate_chosen"]
    assert chosen == reporter.info["lr_range_test"]["suggested_learning_rate"] == \
        reporter.info["lr_range_test"]["learning_rate_chosen"]
    rates = [logs["learning_rate"] for _, logs in reporter.epochs]
    assert rates[0] == pytest.approx(chosen, rel=1e-6)  # float32 of the chosen rate
    if schedule["type"] != "constant":
        assert rates[1] == pytest.approx(chosen / 2, rel=1e-6)  # the schedule starts from it
    assert spec["optimizer"]["learning_rate"] == "auto"  # the caller's spec is left alone


def test_a_resumed_auto_run_keeps_the_rate_and_does_not_sweep_again(tmp_path):
    data = _data()
    spec = make_spec(data, optimizer={"type": "adam", "learning_rate": "auto"},
                     schedule={"type": "exponential_decay", "decay_steps": 1, "decay_rate": 0.5}, **OPTIONS)

    class InterruptAfterFirst(InMemoryReporter):
        def should_stop(self):
            return "interrupted" if self.backups else None

    first = InterruptAfterFirst()
    assert train(spec, data, first, tmp_path / "first").stop_reason == "interrupted"
    epoch, path, state = first.backups[-1]
    assert state["learning_rate_chosen"] == first.info["learning_rate_chosen"]
    shutil.copy(path, tmp_path / "backup.weights.h5")
    second = InMemoryReporter()
    result = train(spec, data, second, tmp_path / "second",
                   resume=ResumeState(str(tmp_path / "backup.weights.h5"), epoch, state))
    assert result.stop_reason == "completed" and "lr_range_test" not in result.timings
    assert second.info["learning_rate_chosen"] == first.info["learning_rate_chosen"]
    assert second.info["lr_range_test"] == first.info["lr_range_test"]
    chosen = first.info["learning_rate_chosen"]
    assert [logs["learning_rate"] for _, logs in second.epochs] == [pytest.approx(chosen / 2 ** e, rel=1e-6)
                                                                    for e in range(epoch, 3)]


@pytest.mark.parametrize("optimizer", [{"type": "adam"}, {"type": "sgd"}, {"type": "sgd", "momentum": 0.9}])
def test_auto_trains_digits_well(tmp_path, optimizer):
    """The rule gives a rate that trains builtin:digits to >= 0.95 with Adam and SGD (with or without
    momentum), where a tenth of the lowest-loss rate overshoots SGD with momentum."""
    digits = load_builtin("digits")
    data = TrainData(digits["x_train"], digits["y_train"], x_test=digits["x_test"], y_test=digits["y_test"])
    info = dataset_info(data)
    spec = make_spec(info, dataset={"validation_split": 0.2, "normalize": "standardize"},
                     model={"layers": [{"type": "dense", "units": 64, "activation": "relu"},
                                       {"type": "dropout", "rate": 0.1},
                                       {"type": "dense", "units": 10, "activation": "softmax"}]},
                     optimizer={**optimizer, "learning_rate": "auto"}, training={"epochs": 20, "batch_size": 32})
    reporter = InMemoryReporter()
    result = train(spec, data, reporter, tmp_path)
    assert result.test_metrics["accuracy"] >= 0.95, (reporter.info["learning_rate_chosen"], result.test_metrics)


# --- the range test's rate as the evidence of findings ------------------------------------------------------


def test_rate_findings_take_the_range_tests_rate_when_it_points_their_way():
    from workers.trainer.diagnostics.findings import analyze_epochs, check_diverged

    from .test_diagnostics_act import _stuck
    from .test_diagnostics_findings import ctx

    context = ctx(optimizer={"type": "sgd", "learning_rate": 1e-10})
    context.range_test_rate = 0.0215
    found = analyze_epochs([_stuck(1)], context)[0]
    assert found["code"] == "lr_too_small" and found["suggested_change_basis"] == "lr_range_test"
    assert found["suggested_change"] == {"optimizer": {"learning_rate": 0.0215}}
    assert "range test" in found["message"]
    # Diverged at 1.0: the range test's lower rate, with clipping; at a rate below it, a tenth as before.
    diverged = check_diverged([], context, nan={"epoch": 2, "learning_rate": 1.0})[0]
    assert diverged["suggested_change_basis"] == "lr_range_test"
    assert diverged["suggested_change"]["optimizer"] == {"learning_rate": 0.0215, "clipnorm": 1.0, "clipvalue": None}
    below = check_diverged([], context, nan={"epoch": 2, "learning_rate": 0.01})[0]
    assert below["suggested_change_basis"] == "divergence"
    assert below["suggested_change"]["optimizer"]["learning_rate"] == pytest.approx(0.001)


def test_a_job_too_slow_to_train_is_told_the_range_tests_rate(tmp_path, mnist_like):
    from .test_diagnostics_act import MLP_784

    spec = make_spec(mnist_like, model=MLP_784, optimizer={"type": "sgd", "learning_rate": 1e-10},
                     training={"epochs": 4, "batch_size": 32}, diagnostics={"lr_range_test": True})
    reporter = InMemoryReporter()
    result = train(spec, mnist_like, reporter, tmp_path)
    assert result.stop_reason == "diagnosis" and result.error_code == "lr_too_small"
    found = reporter.findings_by_key[("lr_too_small", None)]
    assert found["suggested_change_basis"] == "lr_range_test"
    suggested = reporter.info["lr_range_test"]["suggested_learning_rate"]
    assert found["suggested_change"] == {"optimizer": {"learning_rate": suggested}} and suggested > 1e-10
