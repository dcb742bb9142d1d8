"""The data checks (workers/trainer/diagnostics/data_checks.py) on small arrays: each fires when provoked,
with its evidence, and stays quiet on clean data; and through ``train``: the findings a run reports, an
error finding that stops it before preflight, and ``training.class_weight`` as Keras' class_weight."""
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from workers.trainer import InMemoryReporter, TrainData, train
from workers.trainer.data import balanced_class_weight, class_labels, split_data
from workers.trainer.diagnostics.data_checks import (
    FLOAT32_MAX,
    KEY_BLOCK_BYTES,
    analyze_data,
    check_class_balance,
    check_target_range,
    measure_features,
    shared_rows,
)
from workers.trainer.diagnostics.findings import BASES, CODES, RunContext

from .specs import dataset_info, make_spec

RNG = np.random.default_rng(11)
CLASSES3 = dataset_info(input_shape=(4,), n_classes=3)
ONE_VALUE = dataset_info(input_shape=(4,))


def context(info=CLASSES3, **overrides) -> RunContext:
    return RunContext(make_spec(info, **overrides), [])


def codes(items):
    return sorted(f["code"] for f in items)


def clean(n=64, d=4):
    return RNG.normal(size=(n, d)).astype(np.float32)


# --- leakage -------------------------------------------------------------------------------------------


def test_shared_rows_counts_identical_rows_only():
    train = clean(200, 6)
    other = clean(50, 6)
    assert shared_rows(train, other) == 0
    other[[3, 17, 40]] = train[[0, 5, 199]]
    assert shared_rows(train, other) == 3
    # One value off in the last bit is another row.
    other[3, 5] = np.nextafter(other[3, 5], np.float32(np.inf))
    assert shared_rows(train, other) == 2
    # Compared in the training split's dtype; images (rank-3 samples) and odd row lengths (uint8 words).
    assert shared_rows(train.astype(np.float64), other) == 2
    images = RNG.integers(0, 255, size=(30, 3, 3, 1), dtype=np.uint8)  # 9 bytes a row
    assert shared_rows(images, np.concatenate([images[:4], images[:1] ^ 1])) == 4


def test_shared_rows_hashes_in_blocks_and_confirms_key_collisions():
    # More rows than one key block holds, and the shared rows far apart.
    width = 512
    train = clean(KEY_BLOCK_BYTES // (4 * width) * 2 + 7, width)
    other = np.concatenate([train[-1:], train[:1], clean(3, width)])
    assert shared_rows(train, other) == 2
    # Constant-sum rows (one-hot) collide under a plain sum; the weighted keys and the digests tell them apart.
    eye = np.eye(64, dtype=np.float32)
    assert shared_rows(eye[:32], eye[32:]) == 0 and shared_rows(eye[:32], eye[30:]) == 2


def test_leakage_finding_with_evidence_warning_from_one_percent():
    x = clean(100)
    data = TrainData(x[:80], np.zeros(80, dtype=np.int64), x_val=np.concatenate([x[:10], x[80:]]),
                     y_val=np.zeros(30, dtype=np.int64), x_test=x[85:], y_test=np.zeros(15, dtype=np.int64))
    report = measure_features(data)
    assert report["shared"] == {"val": 10, "test": 0}
    [f] = analyze_data(report, data.y_train, context(), 3)
    assert f["code"] == "data_leakage" and f["id"] == "data_leakage:-" and f["severity"] == "warning"
    assert f["evidence"]["val"] == {"rows": 30, "shared_with_train": 10, "fraction": pytest.approx(1 / 3)}
    assert "test" not in f["evidence"] and f["suggested_change"] is None
    assert "10 of 30 validation rows" in f["message"]
    json.dumps(f)
    # One shared row in 200 is a coincidence worth mentioning, not a warning.
    big = clean(300)
    val = np.concatenate([big[:1], clean(199)])
    [f] = analyze_data(measure_features(TrainData(big, big[:, 0], val, val[:, 0])), big[:, 0], context(), 3)
    assert f["severity"] == "info"


def test_leakage_from_rows_repeated_before_validation_split():
    x = clean(50)
    doubled = TrainData(np.concatenate([x, x]), np.zeros(100, dtype=np.int64))
    spec = make_spec(doubled, dataset={"validation_split": 0.2})
    splits = split_data(spec, doubled)
    report = measure_features(splits)
    assert report["shared"]["val"] > 0
    [f] = [f for f in analyze_data(report, splits.y_train, RunContext(spec, []), 1) if f["code"] == "data_leakage"]
    assert "validation_split" in f["message"]


# --- constant and non-finite features --------------------------------------------------------------------


def test_constant_features_info_and_all_constant_warning():
    x = clean()
    x[:, 2] = 7.0
    [f] = analyze_data(measure_features(TrainData(x, np.zeros(64))), np.zeros(64), context(), 3)
    assert f["code"] == "constant_feature" and f["severity"] == "info"
    assert f["evidence"]["features"] == [2] and f["evidence"]["count"] == 1 and f["evidence"]["of"] == 4
    [f] = analyze_data(measure_features(TrainData(np.ones((8, 4), np.float32), np.zeros(8))), np.zeros(8),
                       context(), 3)
    assert f["severity"] == "warning" and f["evidence"]["count"] == 4
    # Constant in the training split only is what counts; token ids and images are not checked.
    assert measure_features(TrainData(np.ones((8, 4), np.int64), np.zeros(8)), integer_inputs=True)["constant"] is None
    images = np.zeros((8, 4, 4, 1), np.float32)
    assert measure_features(TrainData(images, np.zeros(8)))["constant"] is None


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1e39, -3.5e38])
def test_non_finite_features_in_any_split_are_an_error(bad):
    x = clean().astype(np.float64)
    val = clean(16).astype(np.float64)
    val[5, 3] = bad
    report = measure_features(TrainData(x, np.zeros(64), val, np.zeros(16)))
    assert report["non_finite"] == {"train": [], "val": [3]}
    [f] = analyze_data(report, np.zeros(64), context(), 3)
    assert f["code"] == "non_finite_feature" and f["severity"] == "error"
    assert f["evidence"]["val"] == {"features": [3], "count": 1}
    assert f["evidence"]["float32_max"] == FLOAT32_MAX
    json.dumps(f, allow_nan=False)


def test_clean_data_has_no_finding():
    x, y = clean(120), np.arange(120) % 3
    data = TrainData(x[:90], y[:90], x[90:], y[90:], clean(10), np.arange(10) % 3)
    assert analyze_data(measure_features(data), data.y_train, context(), 3) == []
    # Values at float32's largest finite magnitude are representable.
    wide = x.astype(np.float64)
    wide[0, 0], wide[1, 1] = FLOAT32_MAX, -FLOAT32_MAX
    assert measure_features(TrainData(wide, y))["non_finite"] == {"train": []}
    # float32 cannot exceed its own range, and uploads refuse NaN and infinity: not scanned.
    assert measure_features(TrainData(x, y))["non_finite"] == {}


def test_constant_columns_are_proposed_by_a_sample_and_confirmed_on_every_row():
    x = np.zeros((10_000, 3), np.float32)
    x[:, 0] = RNG.normal(size=10_000)
    x[1, 1] = 1.0  # row 1 is not in the evenly spaced sample: only the confirmation over every row sees it
    report = measure_features(TrainData(x, np.zeros(10_000)))
    assert report["constant"] == [2]


# --- class imbalance ---------------------------------------------------------------------------------------


def test_class_imbalance_with_counts_and_the_balanced_suggestion():
    y = np.array([0] * 200 + [1] * 15 + [2] * 20)
    [f] = check_class_balance(y, context(), 3)
    assert f["code"] == "class_imbalance" and f["severity"] == "warning"
    assert f["evidence"]["class_counts"] == {"0": 200, "1": 15, "2": 20}
    assert f["evidence"]["ratio"] == pytest.approx(200 / 15)
    assert (f["evidence"]["majority_class"], f["evidence"]["minority_class"]) == (0, 1)
    assert f["suggested_change"] == {"training": {"class_weight": "balanced"}}
    assert f["suggested_change_basis"] == "class_counts"
    # Below the ratio, or once class_weight is set, quiet.
    assert check_class_balance(np.array([0] * 90 + [1] * 10 + [2] * 10), context(), 3) == []
    assert check_class_balance(y, context(training={"class_weight": "balanced"}), 3) == []


def test_class_imbalance_binary_one_hot_and_absent_classes():
    binary = dataset_info(input_shape=(4,), n_classes=2)
    spec = dict(model={"layers": [{"type": "dense", "units": 1, "activation": "sigmoid"}]},
                loss="binary_crossentropy", metrics=[])
    y = np.array([0.0] * 95 + [1.0] * 5, dtype=np.float32).reshape(-1, 1)
    [f] = check_class_balance(y, context(binary, **spec), 1)
    assert f["evidence"]["class_counts"] == {"0": 95, "1": 5}
    onehot = dataset_info(input_shape=(4,), n_classes=4, target_shape=(4,))
    labels = np.array([0] * 50 + [1] * 4 + [2] * 30)
    [f] = check_class_balance(np.eye(4)[labels], context(onehot), 4)
    assert f["evidence"]["absent_classes"] == [3] and "class(es) 3 none" in f["message"]
    # Regression targets are no classes.
    assert check_class_balance(np.array([0.0] * 95 + [1.0] * 5), context(ONE_VALUE), 1) == []


def test_balanced_class_weight_is_sklearns_rule():
    y = np.array([0] * 60 + [1] * 30 + [3] * 10)
    weights = balanced_class_weight(y)
    assert weights == pytest.approx({0: 100 / (3 * 60), 1: 100 / (3 * 30), 3: 100 / (3 * 10)})
    # Averages 1 over the rows, so the loss keeps its scale.
    assert np.mean([weights[c] for c in y]) == pytest.approx(1.0)
    assert class_labels(np.eye(3)[[2, 0, 1]]).tolist() == [2, 0, 1]
    assert class_labels(np.array([[0.0], [1.0]])).tolist() == [0, 1]


# --- regression targets beyond the final activation ---------------------------------------------------


@pytest.mark.parametrize(("activation", "targets", "fires"), [
    ("sigmoid", [0.0, 0.5, 1.0], False), ("sigmoid", [0.2, 3.0], True), ("tanh", [-1.0, 0.9], False),
    ("tanh", [-2.0, 0.0], True), ("relu", [0.0, 500.0], False), ("relu", [-0.5, 2.0], True),
    ("linear", [-1e6, 1e6], False), ("softplus", [-1.0, 1.0], True), ("relu6", [0.0, 7.0], True),
])
def test_regression_targets_outside_the_final_activation(activation, targets, fires):
    ctx = context(ONE_VALUE, model={"layers": [{"type": "dense", "units": 4, "activation": "relu"},
                                               {"type": "dense", "units": 1, "activation": activation}]})
    found = check_target_range(np.array(targets, dtype=np.float32), ctx)
    assert bool(found) == fires
    if fires:
        [f] = found
        assert f["code"] == "label_out_of_range" and f["severity"] == "warning" and f["layer"] == "dense_2"
        assert f["suggested_change"]["model"]["layers"][-1]["activation"] == "linear"
        assert f["suggested_change_basis"] == "target_range"
        json.dumps(f, allow_nan=False)


def test_target_range_judges_the_targets_as_trained():
    # Targets in [0.2, 0.9] fit a sigmoid raw; standardised (what the loss then sees) half are negative.
    sigmoid = {"layers": [{"type": "dense", "units": 1, "activation": "sigmoid"}]}
    assert check_target_range(np.array([0.2, 0.5, 0.9], np.float32), context(ONE_VALUE, model=sigmoid)) == []
    standardized = context(ONE_VALUE, model=sigmoid, dataset={"normalize_targets": "standardize"})
    [f] = check_target_range(np.array([-1.2, 0.0, 1.2], np.float32), standardized)
    assert "(after normalize_targets)" in f["message"] and f["evidence"]["outside"] == 2
    # Classification losses are not checked here: submission holds labels to the output layer.
    assert check_target_range(np.array([5.0]), context()) == []


# --- through train() ---------------------------------------------------------------------------------------


def _imbalanced(n=160):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = np.where(np.arange(n) % 16 == 0, 1, 0)
    x[y == 1] += 2.0
    return TrainData(x, y)


def test_train_reports_data_findings_with_the_setup(tmp_path):
    data = _imbalanced()
    data.x_test, data.y_test = data.x_train[:20], data.y_train[:20]
    spec = make_spec(data, dataset={"validation_split": 0.2}, training={"epochs": 1, "batch_size": 16, "seed": 0})
    reporter = InMemoryReporter()
    result = train(spec, data, reporter, tmp_path)
    assert result.stop_reason == "completed"
    found = {code: f for (code, _), f in reporter.findings_by_key.items()}
    assert found["class_imbalance"]["evidence"]["class_counts"]["1"] < found["class_imbalance"]["evidence"][
        "class_counts"]["0"] / 10
    assert found["data_leakage"]["evidence"]["test"]["shared_with_train"] > 0
    assert found["data_leakage"]["epoch"] is None


def test_class_weight_balanced_trains_through_keras_class_weight(tmp_path):
    data = _imbalanced()
    results = {}
    for weight in (None, "balanced"):
        spec = make_spec(data, training={"epochs": 3, "batch_size": 16, "seed": 0, "class_weight": weight})
        reporter = InMemoryReporter()
        result = train(spec, data, reporter, tmp_path / str(weight))
        assert result.stop_reason == "completed"
        results[weight] = reporter.epochs[0][1]["loss"]
        assert ("class_imbalance" in reporter.finding_codes) == (weight is None)
    # The same seed and rows, weighted: the minority class's rows count 8 times more, so the loss differs.
    assert results["balanced"] != pytest.approx(results[None], rel=1e-3)


def test_a_non_finite_feature_stops_before_preflight_or_only_flags(tmp_path):
    x = clean(64).astype(np.float64)
    x[40, 1] = 1e39  # finite in float64, infinite as the float32 the model reads
    data = TrainData(x, np.arange(64) % 3)
    spec = make_spec(data, training={"epochs": 2, "batch_size": 16, "seed": 0})
    reporter = InMemoryReporter()
    result = train(spec, data, reporter, tmp_path / "stop")
    assert result.stop_reason == "diagnosis" and result.error_code == "non_finite_feature"
    assert "preflight" not in result.timings and reporter.epochs == []
    assert "before training" in result.error and "feature(s) 1" in result.error
    # Continue: preflight's steps meet the infinite value's NaN loss as before.
    continued = make_spec(data, training={"epochs": 2, "batch_size": 16, "seed": 0},
                          diagnostics={"on_error": "continue"})
    reporter = InMemoryReporter()
    result = train(continued, data, reporter, tmp_path / "continue")
    assert result.stop_reason == "nan_loss"
    assert "non_finite_feature" in reporter.finding_codes


def test_openapi_and_readme_list_every_finding_code_and_basis():
    # The trainer may not import the service's document; this test holds the three lists together.
    root = Path(__file__).resolve().parents[2]
    finding = yaml.safe_load((root / "openapi.yaml").read_text())["components"]["schemas"]["Finding"]
    assert set(finding["properties"]["code"]["enum"]) == set(CODES)
    basis = next(s for s in finding["properties"]["suggested_change_basis"]["oneOf"] if s.get("enum"))
    assert set(basis["enum"]) == set(BASES)
    readme = (root / "README.md").read_text()
    assert all(f"`{code}`" in readme for code in CODES), [c for c in CODES if f"`{c}`" not in readme]
