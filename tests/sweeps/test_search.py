"""Search paths, the five parameter types and the grid (trainyard/sweeps/search.py); Optuna's samplers: test_study.py."""
from __future__ import annotations

import pytest

from trainyard.sweeps.search import (
    PathError,
    apply,
    get_at,
    grid_plan,
    grid_size,
    overlaps,
    parse_param,
    parse_path,
)

BASE = {"optimizer": {"type": "adam", "learning_rate": 0.001},
        "model": {"layers": [{"type": "dense", "units": 8}, {"type": "dense", "units": 3}]},
        "training": {"seed": None}}


def param(path, **raw):
    p, errors = parse_param(path, raw, BASE)
    assert not errors, errors
    return p


def test_paths_parse_get_and_set() -> None:
    assert parse_path("model.layers[1].units") == ("model", "layers", 1, "units")
    assert parse_path("optimizer.learning_rate") == ("optimizer", "learning_rate")
    assert get_at(BASE, parse_path("model.layers[1].units")) == 3
    assert get_at(BASE, parse_path("training.seed")) is None  # null is a value that exists
    spec = apply(BASE, {"model.layers[0].units": 64, "optimizer.learning_rate": 0.1})
    assert spec["model"]["layers"][0]["units"] == 64 and spec["optimizer"]["learning_rate"] == 0.1
    assert BASE["model"]["layers"][0]["units"] == 8  # the base is never changed
    # Only the containers on the way to a value are copied; the rest is shared with the base.
    assert spec["model"]["layers"][1] is BASE["model"]["layers"][1] and spec["training"] is BASE["training"]
    value = {"type": "sgd"}
    assert apply(BASE, {"optimizer": value})["optimizer"] is value


@pytest.mark.parametrize("path, message", [
    ("model.layers[2].units", "model.layers has 2 items"),
    ("optimizer.momentum", "optimizer has no field 'momentum'"),
    ("optimizer.learning_rate.x", "optimizer.learning_rate has no field 'x'"),
    ("model[0]", "model is not a list"),
    ("model..layers", "Not a field path"),
    ("model.layers[-1]", "Not a field path"),
    ("", "Not a field path"),
])
def test_paths_that_name_no_field_are_refused(path: str, message: str) -> None:
    with pytest.raises(PathError, match=message.replace("[", r"\[")):
        get_at(BASE, parse_path(path))


@pytest.mark.parametrize("raw, field, message", [
    ({"type": "sobol"}, "search.optimizer.learning_rate.type", "Must be one of"),
    ({"type": "grid", "values": []}, "search.optimizer.learning_rate.values", "1 to 100"),
    ({"type": "grid", "values": [1, 2, 1]}, "search.optimizer.learning_rate.values[2]", "Repeats values[0]"),
    ({"type": "uniform", "low": 1, "high": 1}, "search.optimizer.learning_rate.high", "greater than low"),
    ({"type": "uniform", "low": "a", "high": 1}, "search.optimizer.learning_rate.low", "finite number"),
    ({"type": "log_uniform", "low": 0, "high": 1}, "search.optimizer.learning_rate.low", "greater than 0"),
    ({"type": "int_uniform", "low": 1.5, "high": 4}, "search.optimizer.learning_rate.low", "whole number"),
    ({"type": "choice", "values": [1], "low": 2}, "search.optimizer.learning_rate.low", "Unknown field"),
    (3, "search.optimizer.learning_rate", "Must be an object"),
])
def test_bad_parameters_name_the_offending_field(raw, field: str, message: str) -> None:
    p, errors = parse_param("optimizer.learning_rate", raw, BASE)
    assert p is None
    assert any(e["field"] == field and message in e["message"] for e in errors), errors


def test_forbidden_and_overlapping_paths() -> None:
    _, errors = parse_param("model.layers[0]", {"type": "choice", "values": [{}]}, BASE, ("model.layers",))
    assert errors[0]["message"] == "The sweep sets model.layers itself; it cannot be searched."
    found = overlaps([param("optimizer", type="choice", values=[{"type": "sgd"}]),
                      param("optimizer.learning_rate", type="uniform", low=0.1, high=0.2)])
    assert found == [{"field": "search.optimizer.learning_rate",
                      "message": "Overlaps search.optimizer; each field may be searched once."}]


def test_grid_plan_is_the_cartesian_product_in_order() -> None:
    params = [param("optimizer.learning_rate", type="grid", values=[0.1, 0.01]),
              param("model.layers[0].units", type="grid", values=[8, 16, 32])]
    assert grid_size(params) == 6
    assert [(t["optimizer.learning_rate"], t["model.layers[0].units"]) for t in grid_plan(params)] == [
        (0.1, 8), (0.1, 16), (0.1, 32), (0.01, 8), (0.01, 16), (0.01, 32)]
