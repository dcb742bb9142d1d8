"""validate_spec: normalisation, defaults, field paths of schema and cross-field errors."""
from __future__ import annotations

import copy
import json
import math
import subprocess
import sys

import pytest

from trainyard.spec import (
    DatasetInfo,
    SpecError,
    SpecLimits,
    count_params,
    infer_shapes,
    metric_keras_class,
    metric_log_name,
    monitor_mode,
    validate_spec,
)

UPLOADED_IMAGES = "ds_" + "a" * 32
UPLOADED_SEQUENCES = "ds_" + "b" * 32
UPLOADED_ONEHOT = "ds_" + "c" * 32
UPLOADED_WITH_VAL = "ds_" + "d" * 32

UPLOADS = {
    UPLOADED_IMAGES: DatasetInfo(UPLOADED_IMAGES, (8, 8, 1), "classification", 10, False, False, (), 1000),
    UPLOADED_SEQUENCES: DatasetInfo(UPLOADED_SEQUENCES, (20,), "classification", 2, False, False, (), 500),
    UPLOADED_ONEHOT: DatasetInfo(UPLOADED_ONEHOT, (4,), "classification", 3, False, False, (3,), 300),
    UPLOADED_WITH_VAL: DatasetInfo(UPLOADED_WITH_VAL, (4,), "regression", None, True, True, (), 300),
}


def lookup(dataset_id: str) -> DatasetInfo | None:
    return UPLOADS.get(dataset_id)


def digits_mlp() -> dict:
    """The example from the issue: a small MLP on the digits data set."""
    return {
        "name": "digits-mlp",
        "dataset": {"id": "builtin:digits", "normalize": "standardize"},
        "model": {
            "input_shape": [64],
            "layers": [
                {"type": "dense", "units": 64, "activation": "relu"},
                {"type": "dropout", "rate": 0.2},
                {"type": "dense", "units": 10, "activation": "softmax"},
            ],
        },
        "loss": "sparse_categorical_crossentropy",
        "metrics": ["accuracy"],
        "callbacks": {"early_stopping": {"monitor": "val_accuracy", "patience": 5}},
        "training": {"epochs": 20, "seed": 0},
    }


def minimal(dataset: str = "builtin:iris", layers: list[dict] | None = None, **top) -> dict:
    inputs = {"builtin:iris": [4], "builtin:diabetes": [10], "builtin:breast_cancer": [30],
              "builtin:digits": [64]}
    spec = {
        "dataset": {"id": dataset},
        "model": {
            "input_shape": inputs.get(dataset) or list(UPLOADS[dataset].input_shape),
            "layers": layers or [{"type": "dense", "units": 3, "activation": "softmax"}],
        },
        "loss": "sparse_categorical_crossentropy",
    }
    spec.update(top)
    return spec


def valid(raw: object, **kwargs) -> dict:
    return validate_spec(raw, datasets=lookup, **kwargs)


def errors(raw: object, **kwargs) -> list[dict[str, str]]:
    with pytest.raises(SpecError) as exc:
        validate_spec(raw, datasets=lookup, **kwargs)
    return exc.value.errors


def error_at(raw: object, field: str, *, contains: str = "", **kwargs) -> str:
    """The message of the error at `field` (asserting there is exactly one there)."""
    found = [e for e in errors(raw, **kwargs) if e["field"] == field]
    assert len(found) == 1, errors(raw, **kwargs)
    assert contains in found[0]["message"], found[0]["message"]
    return found[0]["message"]


DENSE_DEFAULTS = {"use_bias": True, "kernel_initializer": "glorot_uniform", "bias_initializer": "zeros",
                  "kernel_regularizer": None, "bias_regularizer": None}


# --- normalisation and defaults ------------------------------------------------------------------


def test_issue_example_normalises_to_the_documented_shape():
    raw = digits_mlp()
    before = copy.deepcopy(raw)
    spec = validate_spec(raw)
    assert raw == before  # the client's body is not mutated
    assert spec == {
        "version": 1,
        "name": "digits-mlp",
        "labels": {},
        "dataset": {"id": "builtin:digits", "validation_split": 0.2, "normalize": "standardize",
                    "normalize_targets": "none"},
        "model": {"input_shape": [64], "layers": [
            {"type": "dense", "units": 64, "activation": "relu", **DENSE_DEFAULTS},
            {"type": "dropout", "rate": 0.2},
            {"type": "dense", "units": 10, "activation": "softmax", **DENSE_DEFAULTS},
        ]},
        "loss": "sparse_categorical_crossentropy",
        "metrics": ["accuracy"],
        "optimizer": {"type": "adam", "learning_rate": 0.001, "clipnorm": None, "clipvalue": None,
                      "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-07, "amsgrad": False},
        "schedule": {"type": "constant"},
        "callbacks": {
            "early_stopping": {"monitor": "val_accuracy", "patience": 5, "min_delta": 0.0,
                               "mode": "max", "restore_best_weights": False, "start_from_epoch": 0},
            "checkpoint": {"monitor": "val_loss", "mode": "min"},
            "reduce_lr_on_plateau": None,
        },
        "training": {"epochs": 20, "batch_size": 32, "shuffle": True, "seed": 0,
                     "mixed_precision": False, "jit_compile": False, "class_weight": None},
        "limits": {"max_runtime_seconds": None},
        "diagnostics": {"enabled": True, "preflight": True, "on_error": "stop",
                        "lr_range_test": False},
        "resources": {"gpus": None},
    }
    assert json.loads(json.dumps(spec)) == spec  # plain JSON: no tuples, no custom objects


def test_minimal_spec_gets_every_default():
    spec = valid(minimal())
    assert spec["version"] == 1 and spec["name"] is None
    assert spec["metrics"] == []
    assert spec["dataset"] == {"id": "builtin:iris", "validation_split": 0.2, "normalize": "none",
                               "normalize_targets": "none"}
    assert spec["optimizer"]["type"] == "adam" and spec["optimizer"]["learning_rate"] == 0.001
    assert spec["schedule"] == {"type": "constant"}
    assert spec["callbacks"] == {"early_stopping": None, "checkpoint": {"monitor": "val_loss", "mode": "min"},
                                 "reduce_lr_on_plateau": None}
    assert spec["training"] == {"epochs": 10, "batch_size": 32, "shuffle": True, "seed": None,
                                "mixed_precision": False, "jit_compile": False, "class_weight": None}
    assert spec["limits"] == {"max_runtime_seconds": None}
    assert spec["diagnostics"] == {"enabled": True, "preflight": True, "on_error": "stop", "lr_range_test": False}
    assert spec["model"]["layers"][0] == {"type": "dense", "units": 3, "activation": "softmax",
                                          **DENSE_DEFAULTS}


def test_layer_defaults_and_normalisation():
    spec = valid(minimal(UPLOADED_IMAGES, [
        {"type": "conv2d", "filters": 4, "kernel_size": 3, "activation": None},
        {"type": "max_pooling2d", "pool_size": [3, 2]},
        {"type": "activation", "activation": "swish"},
        {"type": "flatten"},
        {"type": "dense", "units": 10, "activation": "softmax",
         "kernel_regularizer": {"l2": 0.01}},
    ]))
    conv, pool, act, _, dense = spec["model"]["layers"]
    assert conv["kernel_size"] == [3, 3] and conv["strides"] == [1, 1]
    assert conv["dilation_rate"] == [1, 1] and conv["padding"] == "valid"
    assert conv["activation"] == "linear"  # null means linear, as in Keras
    assert pool == {"type": "max_pooling2d", "pool_size": [3, 2], "strides": [3, 2], "padding": "valid"}
    assert act["activation"] == "silu"
    assert dense["kernel_regularizer"] == {"l1": 0.0, "l2": 0.01}


def test_recurrent_and_bidirectional_defaults():
    spec = valid(minimal(UPLOADED_SEQUENCES, [
        {"type": "embedding", "input_dim": 1000, "output_dim": 16},
        {"type": "bidirectional", "layer": {"type": "lstm", "units": 8}},
        {"type": "dense", "units": 1, "activation": "sigmoid"},
    ], loss="binary_crossentropy"))
    emb, bi, _ = spec["model"]["layers"]
    assert emb["embeddings_initializer"] == "random_uniform" and emb["embeddings_regularizer"] is None
    assert bi["merge_mode"] == "concat"
    assert bi["layer"] == {"type": "lstm", "units": 8, "activation": "tanh", "return_sequences": False,
                           "use_bias": True, "dropout": 0.0, "recurrent_dropout": 0.0,
                           "kernel_initializer": "glorot_uniform", "recurrent_initializer": "orthogonal",
                           "bias_initializer": "zeros", "kernel_regularizer": None}


def test_aliases_are_normalised():
    spec = valid(minimal("builtin:diabetes", [{"type": "dense", "units": 1}], loss="mse",
                                 metrics=["mae", "rmse"]))
    assert spec["loss"] == "mean_squared_error"
    assert spec["metrics"] == ["mae", "rmse"]  # metric names are log keys: kept as written


@pytest.mark.parametrize("optimizer, expected", [
    ({"type": "sgd", "learning_rate": 0.01},
     {"type": "sgd", "learning_rate": 0.01, "clipnorm": None, "clipvalue": None, "momentum": 0.0,
      "nesterov": False}),
    ({"type": "sgd", "learning_rate": 1}, {"learning_rate": 1.0}),
    ({"type": "adam", "learning_rate": 1e-10}, {"learning_rate": 1e-10, "beta_1": 0.9}),
    ({"type": "adamw"}, {"weight_decay": 0.004, "amsgrad": False}),
    ({"type": "rmsprop", "centered": True}, {"rho": 0.9, "centered": True}),
    ({"type": "adagrad"}, {"initial_accumulator_value": 0.1, "epsilon": 1e-07}),
    ({"type": "nadam", "clipnorm": 1.0}, {"clipnorm": 1.0, "beta_2": 0.999}),
])
def test_seed_optimizers_are_expressible(optimizer, expected):
    spec = valid(minimal(optimizer=optimizer))
    assert spec["optimizer"]["type"] == optimizer["type"]
    assert expected.items() <= spec["optimizer"].items()
    assert isinstance(spec["optimizer"]["learning_rate"], float)


def test_per_epoch_exponential_decay_is_expressible():
    # lr0 * exp(-epoch / 10) == lr0 * exp(-1) ** (epoch / 10)
    spec = valid(minimal(schedule={"type": "exponential_decay", "unit": "epoch",
                                           "decay_steps": 10, "decay_rate": math.exp(-1)}))
    assert spec["schedule"] == {"type": "exponential_decay", "unit": "epoch", "decay_steps": 10,
                                "decay_rate": math.exp(-1), "staircase": False}


@pytest.mark.parametrize("schedule", [
    {"type": "inverse_time_decay", "decay_steps": 5, "decay_rate": 0.5, "unit": "step"},
    {"type": "piecewise_constant", "boundaries": [5, 8], "values": [0.1, 0.01, 0.001]},
    {"type": "cosine_decay", "decay_steps": 10, "warmup_steps": 2, "warmup_target": 0.01},
    {"type": "polynomial_decay", "decay_steps": 10},
])
def test_other_schedules_validate(schedule):
    assert valid(minimal(schedule=schedule))["schedule"]["type"] == schedule["type"]


# --- bodies and schema errors ---------------------------------------------------------------------


@pytest.mark.parametrize("body", [[], ["a"], "spec", 3, None, True])
def test_non_object_bodies(body):
    (err,) = errors(body)
    assert err["field"] == ""
    assert "JSON object" in err["message"]


def test_missing_required_fields():
    assert {e["field"] for e in errors({})} == {"dataset", "model", "loss"}
    assert {e["field"] for e in errors({"dataset": {}, "model": {}, "loss": "mse"})} == {
        "dataset.id", "model.input_shape", "model.layers"}
    error_at(minimal(model={"input_shape": [4], "layers": []}), "model.layers")


@pytest.mark.parametrize("mutate, field", [
    (lambda s: s.update(foo=1), "foo"),
    (lambda s: s["model"]["layers"][0].update(class_name="Dense"), "model.layers[0].class_name"),
    (lambda s: s["dataset"].update(path="/tmp/x.npz"), "dataset.path"),
    (lambda s: s.update(optimizer={"type": "adam", "module": "os"}), "optimizer.module"),
    (lambda s: s.update(callbacks={"checkpoint": {"filepath": "/tmp/x"}}), "callbacks.checkpoint.filepath"),
    (lambda s: s.update(training={"steps": 3}), "training.steps"),
    (lambda s: s["model"].update(name="m"), "model.name"),
])
def test_unknown_keys_are_errors(mutate, field):
    spec = minimal()
    mutate(spec)
    assert error_at(spec, field) == "Unknown field."


def test_unknown_key_inside_bidirectional_layer():
    spec = minimal(UPLOADED_SEQUENCES, [
        {"type": "embedding", "input_dim": 10, "output_dim": 4},
        {"type": "bidirectional", "layer": {"type": "lstm", "units": 2, "go_backwards": True}},
        {"type": "dense", "units": 2, "activation": "softmax"},
    ])
    error_at(spec, "model.layers[1].layer.go_backwards", contains="Unknown field")


@pytest.mark.parametrize("layer, field, contains", [
    ({"type": "dense", "units": "3", "activation": "softmax"}, "model.layers[0].units", "integer"),
    ({"type": "dense", "units": True, "activation": "softmax"}, "model.layers[0].units", "integer"),
    ({"type": "dense", "units": 0}, "model.layers[0].units", "greater than or equal to 1"),
    ({"type": "dense", "units": 2_000_000}, "model.layers[0].units", "1000000"),
    ({"type": "dense", "units": 3, "activation": "os.system"}, "model.layers[0].activation", "relu"),
    ({"type": "dense", "units": 3, "kernel_initializer": "keras.initializers.Zeros"},
     "model.layers[0].kernel_initializer", "glorot_uniform"),
    ({"type": "dense", "units": 3, "use_bias": "yes"}, "model.layers[0].use_bias", "true or false"),
    ({"type": "dense", "units": 3, "kernel_regularizer": {"l3": 1}}, "model.layers[0].kernel_regularizer.l3",
     "Unknown"),
    ({"type": "dense", "units": 3, "kernel_regularizer": "l2"},
     "model.layers[0].kernel_regularizer", "object"),
    ({"type": "lambda", "function": "x"}, "model.layers[0].type", "dense"),
    ({"units": 3}, "model.layers[0].type", "Missing"),
    ({"type": "dropout", "rate": 1.0}, "model.layers[0].rate", "less than or equal to 0.99"),
    ({"type": "dropout"}, "model.layers[0].rate", "Missing"),
    ({"type": "conv1d", "filters": 2, "kernel_size": [3, 3]}, "model.layers[0].kernel_size", "list of 1"),
    ({"type": "reshape", "target_shape": [-1, -1]}, "model.layers[0].target_shape", "one entry"),
])
def test_layer_field_errors(layer, field, contains):
    error_at(minimal(layers=[layer]), field, contains=contains)


def test_error_paths_index_into_later_layers():
    spec = digits_mlp()
    spec["model"]["layers"][2]["units"] = -1
    error_at(spec, "model.layers[2].units")


@pytest.mark.parametrize("top, field", [
    ({"loss": "my_module.my_loss"}, "loss"),
    ({"metrics": ["f1"]}, "metrics[0]"),
    ({"metrics": "accuracy"}, "metrics"),
    ({"metrics": ["accuracy", "accuracy"]}, "metrics"),
    ({"optimizer": {"type": "lbfgs"}}, "optimizer.type"),
    ({"optimizer": {"type": "sgd", "learning_rate": 0}}, "optimizer.learning_rate"),
    ({"optimizer": {"type": "sgd", "learning_rate": "0.1"}}, "optimizer.learning_rate"),
    ({"optimizer": {"type": "adam", "learning_rate": float("nan")}}, "optimizer.learning_rate"),
    ({"optimizer": {"type": "adam", "clipnorm": 1.0, "clipvalue": 0.5}}, "optimizer.clipvalue"),
    ({"optimizer": None}, "optimizer"),
    ({"schedule": {"type": "exponential_decay", "decay_rate": 0.5}}, "schedule.decay_steps"),
    ({"schedule": {"type": "exponential_decay", "decay_steps": 1, "decay_rate": 0.5, "unit": "batch"}},
     "schedule.unit"),
    ({"schedule": {"type": "piecewise_constant", "boundaries": [5, 5], "values": [1, 2, 3]}},
     "schedule.boundaries"),
    ({"schedule": {"type": "piecewise_constant", "boundaries": [5, 8], "values": [1, 2]}},
     "schedule.values"),
    ({"training": {"seed": -1}}, "training.seed"),
    ({"training": {"seed": 2**31}}, "training.seed"),
    ({"training": {"epochs": 1.5}}, "training.epochs"),
    ({"training": {"shuffle": 1}}, "training.shuffle"),
    ({"name": ""}, "name"),
    ({"name": "x" * 129}, "name"),
    ({"name": "../../etc/passwd"}, "name"),
    ({"name": "https://evil.example"}, "name"),
    ({"name": "run\n"}, "name"),
    ({"version": 2}, "version"),
    ({"callbacks": {"checkpoint": None}}, "callbacks.checkpoint"),
    ({"callbacks": {"early_stopping": {"mode": "maximum"}}}, "callbacks.early_stopping.mode"),
    ({"diagnostics": {"enabled": "no"}}, "diagnostics.enabled"),
    ({"limits": {"max_runtime_seconds": 0}}, "limits.max_runtime_seconds"),
])
def test_top_level_field_errors(top, field):
    error_at(minimal(**top), field)


def test_seed_bounds_inclusive():
    assert valid(minimal(training={"seed": 2**31 - 1}))["training"]["seed"] == 2**31 - 1
    assert valid(minimal(training={"seed": None}))["training"]["seed"] is None


@pytest.mark.parametrize("dataset_id", [
    "/etc/passwd", "https://example.com/x.npz", "s3://bucket/key", "builtin:../iris", "ds_123",
    "ds_" + "A" * 32, "sklearn.datasets.load_iris", "ds_" + "a" * 32 + "\n", "builtin:iris\n",
])
def test_dataset_id_never_a_path_url_or_object(dataset_id):
    spec = minimal()
    spec["dataset"]["id"] = dataset_id
    error_at(spec, "dataset.id", contains="data set id")


def test_unknown_dataset_ids():
    spec = minimal()
    spec["dataset"]["id"] = "builtin:mnist"
    error_at(spec, "dataset.id", contains="builtin:digits")
    spec["dataset"]["id"] = "ds_" + "e" * 32
    error_at(spec, "dataset.id", contains="No data set")
    # Without a lookup only the built-in catalogue is known.
    with pytest.raises(SpecError) as exc:
        validate_spec(minimal(UPLOADED_ONEHOT, loss="categorical_crossentropy"))
    assert [e["field"] for e in exc.value.errors] == ["dataset.id"]


# --- cross-field checks ------------------------------------------------------------------------------


@pytest.mark.parametrize("layers, message", [
    ([{"type": "conv2d", "filters": 4, "kernel_size": 3}],
     "conv2d needs inputs of shape (height, width, channels); it gets (64,)"),
    ([{"type": "lstm", "units": 4}], "lstm needs inputs of shape (steps, features); it gets (64,)"),
    ([{"type": "conv1d", "filters": 4, "kernel_size": 3}], "conv1d needs inputs of shape (steps, channels)"),
    ([{"type": "max_pooling1d"}], "max_pooling1d needs inputs of shape (steps, features)"),
    ([{"type": "global_average_pooling1d"}], "global_average_pooling1d needs"),
    ([{"type": "global_average_pooling2d"}], "global_average_pooling2d needs"),
    ([{"type": "bidirectional", "layer": {"type": "gru", "units": 2}}], "bidirectional gru needs"),
    ([{"type": "reshape", "target_shape": [7, 9]}], "holds 63 values; its input (64,) holds 64"),
    ([{"type": "reshape", "target_shape": [-1, 5]}], "not a multiple of 5"),
])
def test_shapes_that_cannot_connect(layers, message):
    spec = minimal("builtin:digits", layers + [{"type": "flatten"},
                                               {"type": "dense", "units": 10, "activation": "softmax"}])
    error_at(spec, "model.layers[0]", contains=message)


def test_shape_error_names_the_failing_layer():
    spec = minimal(UPLOADED_IMAGES, [
        {"type": "conv2d", "filters": 4, "kernel_size": 3},          # (6, 6, 4)
        {"type": "max_pooling2d", "pool_size": 2},                   # (3, 3, 4)
        {"type": "conv2d", "filters": 4, "kernel_size": 5},          # does not fit
        {"type": "flatten"},
        {"type": "dense", "units": 10, "activation": "softmax"},
    ])
    error_at(spec, "model.layers[2]", contains="is larger than the input's (3, 3) positions")


def test_embedding_must_be_first():
    spec = minimal(UPLOADED_SEQUENCES, [
        {"type": "dense", "units": 4},
        {"type": "embedding", "input_dim": 10, "output_dim": 4},
        {"type": "flatten"},
        {"type": "dense", "units": 2, "activation": "softmax"},
    ])
    error_at(spec, "model.layers[1]", contains="first layer")


def test_strides_with_dilation():
    spec = minimal(UPLOADED_IMAGES, [
        {"type": "conv2d", "filters": 4, "kernel_size": 3, "strides": 2, "dilation_rate": 2},
        {"type": "flatten"}, {"type": "dense", "units": 10, "activation": "softmax"},
    ])
    error_at(spec, "model.layers[0].dilation_rate", contains="strides")


def test_input_shape_must_match_dataset():
    spec = minimal()
    spec["model"]["input_shape"] = [5]
    spec["model"]["layers"] = [{"type": "dense", "units": 3, "activation": "softmax"}]
    error_at(spec, "model.input_shape", contains="[4]")


@pytest.mark.parametrize("dataset, layers, loss, contains", [
    # softmax with binary cross-entropy on one unit
    ("builtin:breast_cancer", [{"type": "dense", "units": 1, "activation": "softmax"}],
     "binary_crossentropy", "needs a final sigmoid"),
    # sigmoid with categorical cross-entropy
    (UPLOADED_ONEHOT, [{"type": "dense", "units": 3, "activation": "sigmoid"}],
     "categorical_crossentropy", "needs a final softmax"),
    ("builtin:iris", [{"type": "dense", "units": 3, "activation": "sigmoid"}],
     "sparse_categorical_crossentropy", "needs a final softmax"),
    ("builtin:iris", [{"type": "dense", "units": 3, "activation": "softmax"}],
     "categorical_crossentropy", "use sparse_categorical_crossentropy"),
    ("builtin:digits", [{"type": "dense", "units": 8, "activation": "softmax"}],
     "sparse_categorical_crossentropy", "(10,)"),
    ("builtin:digits", [{"type": "dense", "units": 1, "activation": "sigmoid"}],
     "binary_crossentropy", "needs 2 classes"),
    ("builtin:breast_cancer", [{"type": "dense", "units": 2, "activation": "sigmoid"}],
     "binary_crossentropy", "1 unit"),
    ("builtin:diabetes", [{"type": "dense", "units": 1, "activation": "sigmoid"}],
     "binary_crossentropy", "regression data set"),
    ("builtin:diabetes", [{"type": "dense", "units": 3}], "mean_squared_error", "(1,)"),
    (UPLOADED_ONEHOT, [{"type": "dense", "units": 3, "activation": "softmax"}],
     "sparse_categorical_crossentropy", "use categorical_crossentropy"),
])
def test_loss_against_final_layer_and_targets(dataset, layers, loss, contains):
    error_at(minimal(dataset, layers, loss=loss), "loss", contains=contains)


@pytest.mark.parametrize("dataset, layers, loss", [
    ("builtin:breast_cancer", [{"type": "dense", "units": 1, "activation": "sigmoid"}],
     "binary_crossentropy"),
    ("builtin:breast_cancer", [{"type": "dense", "units": 1, "activation": "tanh"}], "hinge"),
    (UPLOADED_ONEHOT, [{"type": "dense", "units": 3, "activation": "softmax"}], "categorical_crossentropy"),
    # A trailing activation layer is the final activation.
    ("builtin:iris", [{"type": "dense", "units": 3}, {"type": "activation", "activation": "softmax"},
                      {"type": "dropout", "rate": 0.1}], "sparse_categorical_crossentropy"),
    # Regression losses on a classification data set are allowed.
    ("builtin:iris", [{"type": "dense", "units": 1}], "mean_squared_error"),
    ("builtin:diabetes", [{"type": "dense", "units": 8, "activation": "relu"}, {"type": "dense", "units": 1}],
     "huber"),
])
def test_consistent_losses_validate(dataset, layers, loss):
    valid(minimal(dataset, layers, loss=loss))


def test_trailing_activation_layer_overrides_dense_activation():
    spec = minimal(layers=[{"type": "dense", "units": 3, "activation": "softmax"},
                           {"type": "activation", "activation": "sigmoid"}])
    error_at(spec, "loss", contains="model.layers[1] applies sigmoid")


@pytest.mark.parametrize("dataset, loss, layers, metrics, field, contains", [
    ("builtin:diabetes", "mse", [{"type": "dense", "units": 1}], ["mae", "accuracy"], "metrics[1]",
     "regression"),
    ("builtin:iris", "sparse_categorical_crossentropy",
     [{"type": "dense", "units": 3, "activation": "softmax"}], ["auc"], "metrics[0]", "class indices"),
    ("builtin:breast_cancer", "binary_crossentropy",
     [{"type": "dense", "units": 1, "activation": "sigmoid"}], ["sparse_categorical_accuracy"],
     "metrics[0]", "use accuracy"),
])
def test_metric_errors(dataset, loss, layers, metrics, field, contains):
    error_at(minimal(dataset, layers, loss=loss, metrics=metrics), field, contains=contains)


def test_monitor_without_validation_data():
    spec = minimal(metrics=["accuracy"], callbacks={"early_stopping": {"monitor": "val_accuracy"}})
    spec["dataset"]["validation_split"] = 0
    message = error_at(spec, "callbacks.early_stopping.monitor", contains="no validation data")
    assert "Allowed: loss, accuracy." in message


def test_monitor_without_the_metric():
    spec = minimal(callbacks={"checkpoint": {"monitor": "val_accuracy"}})
    message = error_at(spec, "callbacks.checkpoint.monitor", contains="accuracy is not in metrics")
    assert "Allowed: loss, val_loss." in message


def test_monitor_of_reduce_lr():
    spec = minimal(callbacks={"reduce_lr_on_plateau": {"monitor": "learning_rate"}})
    error_at(spec, "callbacks.reduce_lr_on_plateau.monitor", contains="Allowed")


def test_monitor_defaults_follow_validation_data():
    spec = minimal(callbacks={"early_stopping": {}})
    spec["dataset"]["validation_split"] = 0
    out = valid(spec)
    assert out["dataset"]["validation_split"] == 0.0
    assert out["callbacks"]["checkpoint"] == {"monitor": "loss", "mode": "min"}
    assert out["callbacks"]["early_stopping"]["monitor"] == "loss"


def test_monitor_modes_are_resolved():
    spec = minimal(metrics=["accuracy", "mae"], callbacks={
        "checkpoint": {"monitor": "val_accuracy"},
        "early_stopping": {"monitor": "val_mae"},
        "reduce_lr_on_plateau": {"monitor": "accuracy", "mode": "min"},  # explicit mode is kept
    }, layers=[{"type": "dense", "units": 1}], loss="mse")
    callbacks = valid(spec)["callbacks"]
    assert callbacks["checkpoint"]["mode"] == "max"
    assert callbacks["early_stopping"]["mode"] == "min"
    assert callbacks["reduce_lr_on_plateau"]["mode"] == "min"


def test_dataset_with_its_own_validation_part():
    spec = minimal(UPLOADED_WITH_VAL, [{"type": "dense", "units": 1}], loss="mae",
                   callbacks={"early_stopping": {"monitor": "val_loss"}})
    out = valid(spec)
    assert out["dataset"]["validation_split"] == 0.0
    assert out["callbacks"]["checkpoint"]["monitor"] == "val_loss"
    spec["dataset"]["validation_split"] = 0.1
    error_at(spec, "dataset.validation_split", contains="own validation part")


def test_validation_split_leaving_nothing():
    spec = minimal()
    spec["dataset"]["validation_split"] = 0.001  # 120 training samples -> 0.12 held out
    error_at(spec, "dataset.validation_split", contains="120 training samples")


def test_normalize_targets_only_for_regression():
    spec = minimal()
    spec["dataset"]["normalize_targets"] = "standardize"
    error_at(spec, "dataset.normalize_targets", contains="regression")


def test_class_weight_only_for_one_class_per_row():
    assert valid(minimal(training={"class_weight": "balanced"}))["training"]["class_weight"] == "balanced"
    assert valid(minimal())["training"]["class_weight"] is None
    onehot = minimal(UPLOADED_ONEHOT, loss="categorical_crossentropy", training={"class_weight": "balanced"})
    assert valid(onehot)["training"]["class_weight"] == "balanced"
    binary = minimal("builtin:breast_cancer", [{"type": "dense", "units": 1, "activation": "sigmoid"}],
                     loss="binary_crossentropy", training={"class_weight": "balanced"})
    assert valid(binary)["training"]["class_weight"] == "balanced"
    regression = minimal("builtin:diabetes", [{"type": "dense", "units": 1}], loss="mse",
                         training={"class_weight": "balanced"})
    error_at(regression, "training.class_weight", contains="mean_squared_error does not take class labels")
    # A sigmoid per unit (multi-label): several labels a row, no one class to weigh.
    multi = minimal(UPLOADED_ONEHOT, [{"type": "dense", "units": 3, "activation": "sigmoid"}],
                    loss="binary_crossentropy", training={"class_weight": "balanced"})
    error_at(multi, "training.class_weight", contains="one class per row")
    error_at(minimal(training={"class_weight": "inverse"}), "training.class_weight", contains="balanced")
    error_at(minimal(training={"class_weight": {"0": 1.0}}), "training.class_weight")


def test_reduce_lr_only_with_constant_schedule():
    spec = minimal(schedule={"type": "cosine_decay", "decay_steps": 10},
                   callbacks={"reduce_lr_on_plateau": {}})
    error_at(spec, "callbacks.reduce_lr_on_plateau", contains="constant schedule")


def test_warmup_longer_than_run_in_epochs():
    spec = minimal(schedule={"type": "cosine_decay", "decay_steps": 10, "warmup_steps": 11},
                   training={"epochs": 10})
    error_at(spec, "schedule.warmup_steps", contains="(11 epochs) is longer than the run (10 epochs)")
    spec["schedule"]["warmup_steps"] = 10
    valid(spec)


def test_warmup_longer_than_run_in_steps():
    # digits: 1438 training samples, 20% held out -> 1150.4 -> 36 batches of 32 per epoch.
    spec = minimal("builtin:digits", [{"type": "dense", "units": 10, "activation": "softmax"}],
                   schedule={"type": "cosine_decay", "decay_steps": 10, "warmup_steps": 73,
                             "unit": "step"},
                   training={"epochs": 2})
    error_at(spec, "schedule.warmup_steps", contains="longer than the run (72 steps)")
    spec["schedule"]["warmup_steps"] = 72
    valid(spec)


def test_operator_limits():
    small = SpecLimits(max_layers=2, max_params=100, max_epochs=5, max_batch_size=16,
                       max_runtime_seconds=60)
    spec = minimal(layers=[{"type": "dense", "units": 3, "activation": "softmax"}] * 3)
    error_at(spec, "model.layers", contains="At most 2 layers", limits=small)

    spec = minimal(layers=[{"type": "dense", "units": 30},
                           {"type": "dense", "units": 3, "activation": "softmax"}],
                   training={"epochs": 6, "batch_size": 17}, limits={"max_runtime_seconds": 61})
    found = {e["field"]: e["message"] for e in errors(spec, limits=small)}
    assert set(found) == {"model", "training.epochs", "training.batch_size", "limits.max_runtime_seconds"}
    assert "243 parameters" in found["model"]  # 4*30+30 + 30*3+3


def test_parameter_limit_default_is_checked_without_allocating():
    # 1e6 x 1e6 weights would be 4 TB; the count alone refuses it.
    spec = minimal(UPLOADED_SEQUENCES, [
        {"type": "embedding", "input_dim": 10_000_000, "output_dim": 1_000_000},
        {"type": "flatten"}, {"type": "dense", "units": 2, "activation": "softmax"},
    ])
    error_at(spec, "model", contains="at most 50,000,000")


def test_all_errors_reported_together():
    spec = minimal(metrics=["accuracy"], training={"epochs": 3},
                   schedule={"type": "cosine_decay", "decay_steps": 10, "warmup_steps": 4},
                   callbacks={"checkpoint": {"monitor": "val_auc"}})
    spec["model"]["input_shape"] = [5]
    fields = {e["field"] for e in errors(spec)}
    assert {"model.input_shape", "schedule.warmup_steps", "callbacks.checkpoint.monitor"} <= fields


# --- helpers exposed to the trainer ---------------------------------------------------------------


def test_infer_shapes_and_count_params_on_a_normalised_spec():
    spec = validate_spec(digits_mlp())
    shapes = infer_shapes(spec["model"])
    assert [s.output_shape for s in shapes] == [(64,), (64,), (10,)]
    assert [s.params for s in shapes] == [64 * 64 + 64, 0, 64 * 10 + 10]
    assert count_params(spec["model"]) == 4810


def test_metric_names_and_keras_classes():
    assert metric_log_name("rmse") == "rmse"
    assert metric_keras_class("accuracy", "sparse_categorical_crossentropy") == "SparseCategoricalAccuracy"
    assert metric_keras_class("accuracy", "categorical_crossentropy") == "CategoricalAccuracy"
    assert metric_keras_class("accuracy", "binary_crossentropy") == "BinaryAccuracy"
    assert metric_keras_class("rmse", "mean_squared_error") == "RootMeanSquaredError"
    assert (monitor_mode("val_auc"), monitor_mode("val_rmse"), monitor_mode("loss")) == ("max", "min", "min")


def test_import_pulls_in_no_heavy_packages():
    code = ("import sys, trainyard.spec; heavy = [m for m in sys.modules if m.split('.')[0] in "
            "('keras', 'tensorflow', 'flask', 'numpy', 'sklearn', 'sqlalchemy')]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_resources_pick_a_class_the_operator_configured():
    assert valid(minimal())["resources"] == {"gpus": None}  # no preference: any worker
    assert valid(minimal(resources={"gpus": 0}))["resources"] == {"gpus": 0}
    # The defaults configure CPU workers only: a GPU job would wait forever, so it is refused.
    error_at(minimal(resources={"gpus": 1}), "resources.gpus", contains="No worker here serves 1 GPU(s) (gpu)")
    gpu_box = SpecLimits(resource_classes=("cpu", "gpu-2"))
    assert valid(minimal(resources={"gpus": 2}), limits=gpu_box)["resources"] == {"gpus": 2}
    error_at(minimal(resources={"gpus": 4}), "resources.gpus", contains="gpus: 0 (cpu), 2 (gpu-2)", limits=gpu_box)
    error_at(minimal(resources={"gpus": -1}), "resources.gpus")
    error_at(minimal(resources={"gpus": 1, "tpus": 2}), "resources.tpus")


# --- learning_rate "auto" and the range test --------------------------------------------------------------


@pytest.mark.parametrize("kind", ["sgd", "adam", "adagrad"])
def test_auto_learning_rate_is_kept_in_the_normalised_spec(kind):
    spec = valid(minimal(optimizer={"type": kind, "learning_rate": "auto"}))
    assert spec["optimizer"]["learning_rate"] == "auto"
    assert spec["diagnostics"]["lr_range_test"] is False  # "auto" runs the test whatever this says


def test_auto_learning_rate_with_a_schedule_that_starts_from_it():
    spec = valid(minimal(optimizer={"learning_rate": "auto", "type": "adam"},
                         schedule={"type": "exponential_decay", "decay_steps": 2, "decay_rate": 0.5},
                         diagnostics={"lr_range_test": True}))
    assert spec["schedule"]["type"] == "exponential_decay" and spec["diagnostics"]["lr_range_test"] is True


def test_auto_learning_rate_is_refused_with_piecewise_constant():
    message = error_at(minimal(optimizer={"type": "adam", "learning_rate": "auto"},
                               schedule={"type": "piecewise_constant", "boundaries": [2], "values": [0.1, 0.01]}),
                       "optimizer.learning_rate", contains="piecewise_constant")
    assert "schedule.values" in message


@pytest.mark.parametrize("value", ["Auto", "fast", "", None, True, [0.1]])
def test_learning_rate_is_a_number_or_auto(value):
    message = error_at(minimal(optimizer={"type": "adam", "learning_rate": value}), "optimizer.learning_rate")
    assert "auto" in message or value is None


def test_auto_leaves_the_number_bounds_alone():
    error_at(minimal(optimizer={"type": "adam", "learning_rate": 11.0}), "optimizer.learning_rate")
    error_at(minimal(optimizer={"type": "adam", "learning_rate": 0.0}), "optimizer.learning_rate")


def test_lr_range_test_takes_a_boolean():
    error_at(minimal(diagnostics={"lr_range_test": "yes"}), "diagnostics.lr_range_test")
