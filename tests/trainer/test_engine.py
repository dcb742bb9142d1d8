import json
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from workers.trainer import InMemoryReporter, Reporter, TrainData, TrainResult, describe_error, train, warm_up

from .specs import dataset_info, make_spec


def _metrics(reporter):
    return [(epoch, {k: v for k, v in logs.items() if k != "seconds"}) for epoch, logs in reporter.epochs]


def test_started_info_and_result(tmp_path, classification_data):
    data = classification_data
    data.x_test, data.y_test = data.x_train[:8], data.y_train[:8]
    reporter = InMemoryReporter()
    assert isinstance(reporter, Reporter)
    began = time.perf_counter()
    result = train(make_spec(data, training={"epochs": 2}), data, reporter, tmp_path / "job")
    took = time.perf_counter() - began
    info = reporter.info
    assert info["params"] == info["trainable_params"] == (4 * 8 + 8) + (8 * 3 + 3)
    assert [row["type"] for row in info["summary"]] == ["dense", "dense"]
    assert info["summary"][1]["output_shape"] == [None, 3]
    assert (info["train_samples"], info["val_samples"], info["test_samples"]) == (64, 0, 8)
    assert info["normalization"] is None
    assert info["mixed_precision"] is False and info["jit_compile"] is False
    json.dumps(info)
    assert isinstance(result, TrainResult) and reporter.result is result
    assert result.stop_reason == "completed" and result.epochs_run == 2
    assert set(result.test_metrics) == {"loss", "accuracy"}
    assert all(type(v) is float for v in result.test_metrics.values())
    # Each phase is timed, and the phases account for the call (bar the final report).
    assert set(result.timings) == {"setup", "preflight", "fit", "evaluate"}
    assert all(v > 0 for v in result.timings.values())
    assert sum(result.timings.values()) <= took


def test_an_exception_in_fit_is_reported_then_raised(tmp_path, classification_data):
    # A valid spec for 5 features, handed arrays of 4: what a data set that is not what its metadata says
    # would do to the engine.
    spec = make_spec(dataset_info(input_shape=(5,), n_classes=3))
    reporter = InMemoryReporter()
    with pytest.raises(ValueError) as raised:
        train(spec, classification_data, reporter, tmp_path)
    assert reporter.result.stop_reason == "error"
    assert reporter.result.epochs_run == 0
    # The report names the exception for the user: its type and first line, not a traceback.
    assert reporter.result.error == describe_error(raised.value)
    assert reporter.result.error.startswith("ValueError: ") and "\n" not in reporter.result.error


def test_same_seed_same_metrics(tmp_path, classification_data):
    options = dict(model={"layers": [{"type": "dense", "units": 16, "activation": "relu"},
                                     {"type": "dropout", "rate": 0.3},
                                     {"type": "dense", "units": 3, "activation": "softmax"}]},
                   dataset={"validation_split": 0.25, "normalize": "standardize"})
    spec = make_spec(classification_data, training={"epochs": 3, "seed": 123, "shuffle": True}, **options)
    runs = []
    for attempt in range(2):
        reporter = InMemoryReporter()
        train(spec, classification_data, reporter, tmp_path / str(attempt))
        runs.append(_metrics(reporter))
    assert runs[0] == runs[1]
    other = InMemoryReporter()
    train(make_spec(classification_data, training={"epochs": 3, "seed": 7, "shuffle": True}, **options),
          classification_data, other, tmp_path / "other")
    assert _metrics(other) != runs[0], "the seed has no effect"


def test_engine_equals_a_plain_keras_script(tmp_path):
    """Same seed, data and spec: the engine's weights equal a hand-written script's."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(96, 6)).astype(np.float32)
    y = rng.integers(0, 3, size=96)
    seed, epochs, batch = 11, 3, 16
    data = TrainData(x, y)
    spec = make_spec(
        data, model={"layers": [{"type": "dense", "units": 12, "activation": "relu"},
                                {"type": "dense", "units": 3, "activation": "softmax"}]},
        optimizer={"type": "adam", "learning_rate": 0.01},
        training={"epochs": epochs, "batch_size": batch, "seed": seed, "shuffle": False})
    result = train(spec, data, InMemoryReporter(), tmp_path)
    engine_weights = keras.models.load_model(
        tmp_path / "checkpoints" / f"epoch-{epochs:04d}.keras").get_weights()
    assert result.best_epoch == epochs

    # The plain script (op determinism, as any reproducible script needs).
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    model = keras.Sequential([
        keras.Input(shape=(6,)),
        keras.layers.Dense(12, activation="relu"),
        keras.layers.Dense(3, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.01),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, batch_size=batch, epochs=epochs, shuffle=False, verbose=0)

    assert len(engine_weights) == len(model.get_weights())
    for ours, theirs in zip(engine_weights, model.get_weights()):
        np.testing.assert_array_equal(ours, theirs)


def test_digits_reaches_95_percent_test_accuracy(tmp_path):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.data.astype(np.float32), digits.target, test_size=0.2, random_state=0,
        stratify=digits.target)
    data = TrainData(x_train, y_train, x_test=x_test, y_test=y_test)
    spec = make_spec(
        data, dataset={"validation_split": 0.0, "normalize": "standardize"},
        model={"layers": [{"type": "dense", "units": 64, "activation": "relu"},
                          {"type": "dense", "units": 64, "activation": "relu"},
                          {"type": "dense", "units": 10, "activation": "softmax"}]},
        optimizer={"type": "adam", "learning_rate": 1e-3},
        training={"epochs": 30, "batch_size": 32, "seed": 0})
    reporter = InMemoryReporter()
    result = train(spec, data, reporter, tmp_path)
    assert result.stop_reason == "completed" and result.epochs_run == 30
    assert result.test_metrics["accuracy"] >= 0.95, result.test_metrics


def test_mixed_precision_and_jit_are_no_ops_on_cpu(tmp_path, classification_data):
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("CPU behaviour")
    before = keras.mixed_precision.dtype_policy().name
    reporter = InMemoryReporter()
    spec = make_spec(classification_data, training={"mixed_precision": True, "jit_compile": True})
    train(spec, classification_data, reporter, tmp_path)
    assert reporter.info["mixed_precision"] is False and reporter.info["jit_compile"] is False
    assert keras.mixed_precision.dtype_policy().name == before == "float32"


def test_warm_up_returns_seconds():
    seconds = warm_up()
    assert 0 < seconds < 60
