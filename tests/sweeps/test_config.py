"""Checking a sweep request against the job-spec validator (trainyard/sweeps/config.py); no database."""
from __future__ import annotations

from typing import Any

import pytest

from trainyard.spec import SpecLimits
from trainyard.sweeps.config import SweepError, trial_spec, validate_sweep
from tests.conftest import tiny_spec


def body(**overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "base": tiny_spec(),
        "search": {"optimizer.learning_rate": {"type": "log_uniform", "low": 1e-4, "high": 1e-1},
                   "model.layers[0].units": {"type": "grid", "values": [32, 64]}},
        "objective": {"metric": "val_loss", "mode": "min"},
        "max_trials": 8, "parallelism": 2, "early_stopping": {"type": "median"}, "seed": 3,
    }
    raw.update(overrides)
    return raw


def check(raw: Any, max_trials_limit: int = 50):
    return validate_sweep(raw, datasets=None, limits=SpecLimits(), max_trials_limit=max_trials_limit)


def errors_of(raw: Any, **kwargs: Any) -> dict[str, str]:
    with pytest.raises(SweepError) as info:
        check(raw, **kwargs)
    return {e["field"]: e["message"] for e in info.value.errors}


def test_the_issue_example_is_accepted_with_defaults_filled_and_a_valid_plan() -> None:
    config = check(body(seed=None, early_stopping={"type": "median"}))
    assert config.max_trials == 8 and config.parallelism == 2
    assert config.early_stopping == {"type": "median", "grace_epochs": 1, "min_trials": 2}
    assert 0 <= config.seed < 2**31  # drawn and kept, so the sweep can be run again exactly
    assert config.as_json()["search"]["model.layers[0].units"] == {"type": "grid", "values": [32, 64]}
    assert len(config.plan) == 8
    for index, values in enumerate(config.plan):
        spec = trial_spec(config.base, values, config.objective, config.name, index, datasets=None,
                          limits=SpecLimits())
        assert spec["model"]["layers"][0]["units"] == values["model.layers[0].units"]
        assert spec["optimizer"]["learning_rate"] == values["optimizer.learning_rate"]
        assert spec["callbacks"]["checkpoint"] == {"monitor": "val_loss", "mode": "min"}
        assert spec["name"] == f"tiny (trial {index})"


def test_objective_mode_auto_and_metric_must_be_logged() -> None:
    config = check(body(objective={"metric": "val_accuracy"}))
    assert config.objective == {"metric": "val_accuracy", "mode": "max"}
    no_val = tiny_spec(dataset={"id": "builtin:iris", "validation_split": 0})
    found = errors_of(body(base=no_val))
    assert found["objective.metric"].startswith("The trials never log val_loss; allowed: loss, accuracy.")
    assert "objective.mode" in errors_of(body(objective={"metric": "loss", "mode": "lowest"}))
    assert "objective.metric" in errors_of(body(objective={"metric": "val_auc"}))


def test_invalid_base_and_values_name_their_fields() -> None:
    bad_base = tiny_spec()
    bad_base["model"]["layers"][0]["units"] = 0
    assert "base.model.layers[0].units" in errors_of(body(base=bad_base))
    assert errors_of(body(base=None)) == {"base": "The job spec must be a JSON object; got null."}
    found = errors_of(body(search={
        "optimizer.learning_rate": {"type": "uniform", "low": 0.001, "high": 2.0},
        "model.layers[0].units": {"type": "grid", "values": [32, 0]},
        "training.batch_size": {"type": "int_uniform", "low": 16, "high": 10**6},
    }))
    assert found["search.model.layers[0].units.values[1]"].startswith(
        "0 gives an invalid job spec: model.layers[0].units: Must be greater than or equal to 1")
    assert found["search.training.batch_size.high"].startswith("1000000 gives an invalid job spec: training.batch_size")
    assert "search.optimizer.learning_rate.low" not in found


def test_a_combination_that_fails_is_named_by_trial() -> None:
    # Each value is valid with the base's other values; a warm-up of 4 epochs in a 3-epoch run is not.
    base = tiny_spec(training={"epochs": 5, "batch_size": 16, "seed": 1},
                     schedule={"type": "cosine_decay", "decay_steps": 10, "warmup_steps": 2})
    raw = body(base=base, search={"training.epochs": {"type": "grid", "values": [3, 5]},
                                  "schedule.warmup_steps": {"type": "grid", "values": [2, 4]}})
    raw.pop("max_trials")
    found = errors_of(raw)
    assert list(found) == ["search"]
    assert found["search"].startswith("Trial 1: {'training.epochs': 3, 'schedule.warmup_steps': 4} gives an "
                                      "invalid job spec: schedule.warmup_steps: The warm-up (4 epochs) is longer")


@pytest.mark.parametrize("overrides, field, message", [
    ({"max_trials": 7}, "max_trials", "Must be a multiple of 2"),
    ({"max_trials": 0}, "max_trials", "from 1 to 50"),
    ({"max_trials": 51}, "max_trials", "from 1 to 50"),
    ({"search": {"model.layers[0].units": {"type": "grid", "values": [8, 16, 32]}}, "max_trials": 4},
     "max_trials", "leave max_trials out or set it to 3"),
    ({"search": {"optimizer.learning_rate": {"type": "uniform", "low": 0.01, "high": 0.1}}, "max_trials": None},
     "max_trials", "Required"),
    ({"search": {"model.layers[0].units": {"type": "grid", "values": list(range(1, 11))},
                 "model.layers[1].units": {"type": "grid", "values": list(range(1, 11))}}},
     "search", "The grid has 100 combinations"),
    ({"search": {}}, "search", "1 to 20"),
    ({"search": {"name": {"type": "choice", "values": ["a"]}}}, "search.name", "cannot be searched"),
    ({"search": {"callbacks.checkpoint.monitor": {"type": "choice", "values": ["loss"]}}},
     "search.callbacks.checkpoint.monitor", "cannot be searched"),
    ({"search": {"optimizer.momentum": {"type": "uniform", "low": 0, "high": 0.9}}},
     "search.optimizer.momentum", "optimizer has no field 'momentum'"),
    ({"parallelism": 0}, "parallelism", "from 1 to 64"),
    ({"early_stopping": {"type": "hyperband"}}, "early_stopping.type", "median"),
    ({"early_stopping": {"type": "median", "grace_epochs": -1}}, "early_stopping.grace_epochs", "from 0"),
    ({"seed": 2**31}, "seed", "from 0 to 2147483647"),
    ({"name": "a/b"}, "name", "letters, digits"),
    ({"extra": 1}, "extra", "Unknown field."),
])
def test_refused_requests(overrides: dict[str, Any], field: str, message: str) -> None:
    raw = body(**overrides)
    if raw.get("max_trials", 1) is None:
        raw.pop("max_trials")
    found = errors_of(raw)
    assert field in found and message in found[field], found


def test_a_grid_only_search_defaults_max_trials_to_the_grid() -> None:
    raw = body(search={"model.layers[0].units": {"type": "grid", "values": [8, 16, 32]}})
    raw.pop("max_trials")
    config = check(raw)
    assert config.max_trials == 3
    assert [t["model.layers[0].units"] for t in config.plan] == [8, 16, 32]
