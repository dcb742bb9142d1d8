"""A sweep body's validation is linear in its size: capped counts, and every shared object checked once.

Before, a 23 KiB body (a 64-layer base, 20 searched fields with 100 values each, 200 trials) held an API
worker for 20 s: each of its 2,000 values and 200 trials validated the whole 64-layer spec again. Tests
check the work structurally (how many values, how many layer loads); bench/spec_cost.py has the times.
"""
from __future__ import annotations

import copy
from typing import Any

import pytest

from trainyard.spec import SpecLimits
from trainyard.spec.layers import LAYER_SCHEMAS
from trainyard.sweeps.config import MAX_SEARCH_VALUES, SweepError, validate_sweep
from trainyard.sweeps.search import MAX_PATH_LENGTH

DENSE = {"type": "dense", "units": 4, "activation": "relu", "kernel_regularizer": {"l1": 0.0, "l2": 0.001}}
BASE = {
    "dataset": {"id": "builtin:iris"},
    "model": {"input_shape": [4], "layers": [copy.deepcopy(DENSE) for _ in range(63)]
              + [{"type": "dense", "units": 3, "activation": "softmax"}]},
    "loss": "sparse_categorical_crossentropy",
}


def sweep(search: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    return {"base": copy.deepcopy(BASE), "search": search, "objective": {"metric": "val_loss"}, **overrides}


def check(raw: dict[str, Any]) -> Any:
    return validate_sweep(raw, datasets=None, limits=SpecLimits(), max_trials_limit=200)


def refused(raw: dict[str, Any]) -> list[dict[str, str]]:
    with pytest.raises(SweepError) as info:
        check(raw)
    return info.value.errors


@pytest.fixture
def dense_loads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts how often the dense layer schema loads an object."""
    calls: list[int] = []
    schema = LAYER_SCHEMAS["dense"]
    original = schema.load

    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(schema, "load", counting)
    return calls


def test_the_search_may_list_at_most_max_search_values_values_in_all() -> None:
    search = {f"model.layers[{i}].units": {"type": "choice", "values": list(range(1, 101))} for i in range(20)}
    errors = refused(sweep(search, max_trials=200))
    assert errors == [{"field": "search", "message": "The search lists 2000 values; at most 200 are allowed in all."}]
    assert MAX_SEARCH_VALUES == 200


def test_trials_load_each_distinct_layer_once(dense_loads: list[int]) -> None:
    # 20 fields x 10 values, 200 trials: every trial sets 20 of the 64 layers, but only 200 distinct layers
    # (20 positions x 10 values) exist besides the base's, so only those are loaded.
    search = {f"model.layers[{i}].units": {"type": "choice", "values": list(range(1, 11))} for i in range(20)}
    config = check(sweep(search, max_trials=200))
    assert config.max_trials == 200
    base_layers = 2  # the base holds two distinct dense layers (63 equal ones and the softmax head)
    assert len(dense_loads) <= base_layers + 20 * 10 + 1  # + the head under its normalised form


def test_whole_models_as_values_are_loaded_once_each(dense_loads: list[int]) -> None:
    models = [[dict(DENSE, units=u)] * 63 + [{"type": "dense", "units": 3, "activation": "softmax"}]
              for u in range(1, 41)]
    config = check(sweep({"model.layers": {"type": "choice", "values": models}}, max_trials=200))
    assert config.max_trials == 200
    assert len(dense_loads) <= 2 + 40 + 2


def test_a_path_with_an_index_of_thousands_of_digits_is_refused_not_crashed() -> None:
    # int() refuses a string of more than 4,300 digits with ValueError; a path is at most 200 characters.
    errors = refused(sweep({"model.layers[" + "9" * 5000 + "].units": {"type": "choice", "values": [1]}},
                           max_trials=1))
    assert [e["field"] for e in errors] == ["search"]
    errors = refused(sweep({"model.layers[" + "9" * 150 + "].units": {"type": "choice", "values": [1]}},
                           max_trials=1))
    assert errors[0]["message"] == "No such field in the base spec: model.layers has 64 items."
    long_path = "a" * 1_000_000
    errors = refused(sweep({long_path: {"type": "choice", "values": [1]}}, max_trials=1))
    assert errors == [{"field": "search", "message": f"A field path has at most {MAX_PATH_LENGTH} characters; one "
                                                     f"has 1000000, starting {'a' * 40!r}."}]


@pytest.mark.parametrize("high", [10**400, 2**53 + 1])
def test_int_uniform_bounds_past_2_53_are_refused_not_overflowed(high: int) -> None:
    errors = refused(sweep({"training.epochs": {"type": "int_uniform", "low": 1, "high": high}}, max_trials=2))
    assert errors == [{"field": "search.training.epochs.high", "message": "Must be a whole number from -2^53 to 2^53."}]


def test_a_value_quoted_in_an_error_is_cut_short() -> None:
    bad_model = [dict(DENSE, units=0)] * 64
    errors = refused(sweep({"model.layers": {"type": "choice", "values": [bad_model]}}, max_trials=1))
    assert errors[0]["field"] == "search.model.layers.values[0]"
    assert len(errors[0]["message"]) < 400 and "..." in errors[0]["message"]


def test_a_flood_of_unknown_top_level_fields_gets_a_short_answer() -> None:
    raw = {**sweep({"optimizer.learning_rate": {"type": "choice", "values": [0.1]}}, max_trials=1),
           **{f"k{i}": 1 for i in range(100_000)}}
    errors = refused(raw)
    assert len(errors) == 51 and errors[-1]["message"] == "99950 more errors are not listed."
