"""Every number in a spec is bounded to what the engine can use, and every list is capped.

The specs refused here all passed validation before the caps (trainyard/spec/bounds.py) and then failed in
the worker: TensorFlow refuses a Python float beyond float32's range where it converts one, and Keras
rounds a momentum of 0.99999999999 to 1.0 in float32. tests/property/ draws specs at and near every cap
and trains the accepted ones.
"""
from __future__ import annotations

import copy

import pytest

from trainyard.spec import SpecError, validate_spec
from trainyard.spec.errors import MAX_ERRORS
from trainyard.spec.fields import FLOAT32_MAX
from tests.property.schema_walk import unbounded_lists, unbounded_maps, unbounded_numbers
from trainyard.spec.labels import MAX_KEY_CHARS, MAX_LABELS, MAX_VALUE_CHARS


def iris(**overrides: object) -> dict:
    spec: dict = {
        "dataset": {"id": "builtin:iris"},
        "model": {"input_shape": [4], "layers": [{"type": "dense", "units": 3, "activation": "softmax"}]},
        "loss": "sparse_categorical_crossentropy",
    }
    spec.update(copy.deepcopy(overrides))
    return spec


def refused(raw: object) -> list[dict[str, str]]:
    with pytest.raises(SpecError) as exc:
        validate_spec(raw)
    return exc.value.errors


def test_every_number_the_schema_declares_has_a_minimum_and_a_maximum() -> None:
    # Walks the schema itself, so a field added later without bounds fails here.
    assert unbounded_numbers() == []


def test_every_list_the_schema_declares_is_capped_before_its_items_are_read() -> None:
    # `model.layers` is capped by the operator's TRAINYARD_MAX_LAYERS before the schema runs.
    assert unbounded_lists() == []


def test_every_map_the_schema_declares_is_capped() -> None:
    # Labels are the spec's only map with keys of the client's choosing; any other would need its own cap.
    assert unbounded_maps() == []


def test_labels_at_their_caps_are_accepted_and_one_past_is_refused() -> None:
    full = {f"k{i:02d}" + "k" * (MAX_KEY_CHARS - 3): "v" * MAX_VALUE_CHARS for i in range(MAX_LABELS)}
    assert validate_spec(iris(labels=full))["labels"] == full
    assert [e["field"] for e in refused(iris(labels={**full, "one-more": "v"}))] == ["labels"]
    assert [e["field"] for e in refused(iris(labels={"k" * (MAX_KEY_CHARS + 1): "v"}))] == \
        [f"labels.{'k' * (MAX_KEY_CHARS + 1)}"]
    assert [e["field"] for e in refused(iris(labels={"k": "v" * (MAX_VALUE_CHARS + 1)}))] == ["labels.k"]
    # A 1 MiB key is named by its first characters only.
    assert refused(iris(labels={"K" * 2**20: "v"}))[0]["field"] == "labels." + "K" * 80 + "..."


DENSE = {"type": "dense", "units": 3, "activation": "softmax"}

# Each of these passed validation before and then failed in the worker (stop_reason "error", error null),
# or trained on a rate that float32 turns into 1.0 or infinity.
DIED_IN_THE_WORKER = [
    ({"optimizer": {"type": "adagrad", "initial_accumulator_value": 1e300}}, "optimizer.initial_accumulator_value"),
    ({"optimizer": {"type": "adam", "learning_rate": 1e300}}, "optimizer.learning_rate"),
    ({"optimizer": {"type": "adam", "beta_1": 0.99999999999}}, "optimizer.beta_1"),
    ({"optimizer": {"type": "adam", "epsilon": 5e-324}}, "optimizer.epsilon"),
    ({"optimizer": {"type": "adamw", "weight_decay": 1e300}}, "optimizer.weight_decay"),
    ({"optimizer": {"type": "sgd", "clipvalue": 1e300}}, "optimizer.clipvalue"),
    ({"schedule": {"type": "exponential_decay", "decay_steps": 1, "decay_rate": 1e300}}, "schedule.decay_rate"),
    ({"schedule": {"type": "inverse_time_decay", "decay_steps": 1, "decay_rate": 1e300}}, "schedule.decay_rate"),
    ({"schedule": {"type": "piecewise_constant", "boundaries": [1], "values": [1e300, 0.1]}}, "schedule.values[0]"),
    ({"schedule": {"type": "cosine_decay", "decay_steps": 1, "warmup_steps": 1, "warmup_target": 1e300}},
     "schedule.warmup_target"),
    ({"schedule": {"type": "polynomial_decay", "decay_steps": 1, "power": 1e300}}, "schedule.power"),
    ({"schedule": {"type": "polynomial_decay", "decay_steps": 1, "end_learning_rate": 1e300}},
     "schedule.end_learning_rate"),
    ({"callbacks": {"early_stopping": {"min_delta": 1e300}}}, "callbacks.early_stopping.min_delta"),
    ({"callbacks": {"reduce_lr_on_plateau": {"min_lr": 1e300}}}, "callbacks.reduce_lr_on_plateau.min_lr"),
    ({"callbacks": {"reduce_lr_on_plateau": {"factor": 1e-300}}}, "callbacks.reduce_lr_on_plateau.factor"),
    ({"model": {"input_shape": [4], "layers": [{**DENSE, "kernel_regularizer": {"l1": 1e300}}]}},
     "model.layers[0].kernel_regularizer.l1"),
    ({"model": {"input_shape": [4], "layers": [{"type": "dropout", "rate": 0.99999999999}, DENSE]}},
     "model.layers[0].rate"),
    ({"model": {"input_shape": [4], "layers": [{"type": "batch_normalization", "momentum": 0.99999999999}, DENSE]}},
     "model.layers[0].momentum"),
]


@pytest.mark.parametrize("overrides, field", DIED_IN_THE_WORKER, ids=[f for _, f in DIED_IN_THE_WORKER])
def test_numbers_the_engine_cannot_use_are_refused_at_their_field(overrides: dict, field: str) -> None:
    errors = refused(iris(**overrides))
    assert [e["field"] for e in errors] == [field], errors


@pytest.mark.parametrize("value", [FLOAT32_MAX * 2, -FLOAT32_MAX * 2, 10**400, -(10**400), float("inf"),
                                   float("nan")])
def test_a_float_beyond_float32_is_refused_without_overflowing(value: float) -> None:
    # 10**400 is a valid JSON number; float() of it raises OverflowError, which marshmallow does not catch.
    errors = refused(iris(dataset={"id": "builtin:iris", "validation_split": value}))
    assert errors == [{"field": "dataset.validation_split",
                       "message": "Must be a finite number between -3.402823e+38 and 3.402823e+38."}]


@pytest.mark.parametrize("value", [10**400, 1e300, -(10**30)])
def test_huge_integers_are_range_checked(value: float) -> None:
    errors = refused(iris(training={"epochs": 2, "seed": value}))
    assert [e["field"] for e in errors] == ["training.seed"]


def test_values_at_the_caps_are_accepted_and_stay_floats() -> None:
    spec = validate_spec(iris(
        optimizer={"type": "adamw", "learning_rate": 10, "beta_1": 0.99999, "beta_2": 0, "epsilon": 1e-12,
                   "weight_decay": 1, "clipnorm": 1e6},
        schedule={"type": "piecewise_constant", "boundaries": list(range(1, 101)), "values": [1e-10] * 101},
    ))
    assert spec["optimizer"] == {"type": "adamw", "learning_rate": 10.0, "clipnorm": 1e6, "clipvalue": None,
                                 "beta_1": 0.99999, "beta_2": 0.0, "epsilon": 1e-12, "amsgrad": False,
                                 "weight_decay": 1.0}
    assert all(type(v) is float for v in spec["optimizer"].values() if not isinstance(v, (str, bool, type(None))))


@pytest.mark.parametrize("overrides, field, message", [
    ({"metrics": ["accuracy"] * 100_000}, "metrics", "at most 11 items; got 100000"),
    ({"schedule": {"type": "piecewise_constant", "boundaries": list(range(1, 102)), "values": [0.1] * 101}},
     "schedule.boundaries", "at most 100 items; got 101"),
    ({"model": {"input_shape": [1] * 100_000, "layers": [DENSE]}}, "model.input_shape", "at most 3 items"),
    ({"model": {"input_shape": [4], "layers": [{"type": "reshape", "target_shape": [1] * 100_000}, DENSE]}},
     "model.layers[0].target_shape", "at most 3 items"),
])
def test_a_long_list_is_refused_by_its_length_alone(overrides: dict, field: str, message: str) -> None:
    errors = refused(iris(**overrides))
    # One error for the list, none for its items: they were never read.
    assert len(errors) == 1 and errors[0]["field"] == field and message in errors[0]["message"], errors


def test_repeated_metrics_are_named_once() -> None:
    errors = refused(iris(metrics=["accuracy", "auc", "accuracy", "auc"]))
    assert errors == [{"field": "metrics", "message": "Each metric may appear once; repeated: accuracy, auc."}]


def test_a_flood_of_unknown_keys_names_a_few_and_counts_the_rest() -> None:
    layer = {**DENSE, **{f"k{i}": 1 for i in range(50_000)}}
    errors = refused(iris(model={"input_shape": [4], "layers": [layer]}))
    assert len(errors) == 11
    assert errors[:2] == [{"field": "model.layers[0].k0", "message": "Unknown field."},
                          {"field": "model.layers[0].k1", "message": "Unknown field."}]
    assert errors[-1] == {"field": "model.layers[0]", "message": "49990 more unknown fields are not listed."}
    top = refused({**iris(), **{f"k{i}": 1 for i in range(50_000)}})
    assert len(top) == 11 and top[-1] == {"field": "", "message": "49990 more unknown fields are not listed."}


def test_an_answer_lists_at_most_max_errors() -> None:
    layers = [{"type": "dense", "units": 0, "activation": "nope", "use_bias": 3}] * 64
    errors = refused(iris(model={"input_shape": [4], "layers": layers}))
    assert len(errors) == MAX_ERRORS + 1
    assert errors[-1] == {"field": "", "message": f"{64 * 3 - MAX_ERRORS} more errors are not listed."}

