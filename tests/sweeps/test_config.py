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
    # Left out, the algorithm is today's: random draws (a grid only when every parameter is one).
    assert config.algorithm == {"type": "random", "seed": config.seed}
    for index, values in enumerate([{"optimizer.learning_rate": 1e-4, "model.layers[0].units": 32},
                                    {"optimizer.learning_rate": 0.1, "model.layers[0].units": 64}]):
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
    ({"early_stopping": {"type": "halving"}}, "early_stopping.type", "median, asha, hyperband, none"),
    ({"early_stopping": {"type": "asha", "reduction_factor": 1}}, "early_stopping.reduction_factor", "2"),
    ({"early_stopping": {"type": "asha", "min_resource": "1"}}, "early_stopping.min_resource", "integer"),
    ({"early_stopping": {"type": "hyperband", "min_resource": 3, "max_resource": 2}},
     "early_stopping.max_resource", "at least min_resource (3)"),
    ({"early_stopping": {"type": "asha", "grace_epochs": 1}}, "early_stopping.grace_epochs", "Unknown field"),
    ({"algorithm": {"type": "bayes"}}, "algorithm.type", "grid, random, tpe, cmaes, qmc, nsga2"),
    ({"algorithm": "tpe"}, "algorithm", "Must be an object with a type"),
    ({"algorithm": {"type": "tpe", "n_startup_trials": -1}}, "algorithm.n_startup_trials", "0"),
    ({"algorithm": {"type": "qmc", "qmc_type": "lattice"}}, "algorithm.qmc_type", "sobol"),
    ({"algorithm": {"type": "grid"}}, "algorithm.type", "search.optimizer.learning_rate is log_uniform"),
    ({"algorithm": {"type": "tpe", "seed": 4}}, "algorithm.seed", "Differs from seed (3)"),
    ({"objectives": [{"metric": "val_loss"}], "objective": None}, "objectives", "2 or 3"),
    ({"objectives": [{"metric": "val_loss"}, {"metric": "val_auc"}], "objective": None}, "objectives[1].metric", "never log val_auc"),
    ({"objectives": [{"metric": "val_loss"}, {"metric": "val_loss"}], "objective": None}, "objectives[1].metric", "already"),
    ({"early_stopping": {"type": "median", "grace_epochs": -1}}, "early_stopping.grace_epochs", "from 0"),
    ({"seed": 2**31}, "seed", "from 0 to 2147483647"),
    ({"name": "a/b"}, "name", "letters, digits"),
    ({"extra": 1}, "extra", "Unknown field."),
])
def test_refused_requests(overrides: dict[str, Any], field: str, message: str) -> None:
    raw = body(**overrides)
    for key in ("max_trials", "objective"):
        if key in raw and raw[key] is None:
            raw.pop(key)
    found = errors_of(raw)
    assert field in found and message in found[field], found


def test_a_grid_only_search_defaults_max_trials_to_the_grid() -> None:
    raw = body(search={"model.layers[0].units": {"type": "grid", "values": [8, 16, 32]}})
    raw.pop("max_trials")
    config = check(raw)
    assert config.max_trials == 3 and config.algorithm == {"type": "grid", "seed": 3}


def test_algorithms_and_pruners_get_optuna_defaults_filled() -> None:
    config = check(body(algorithm={"type": "tpe"}, early_stopping={"type": "asha"}))
    assert config.algorithm == {"type": "tpe", "seed": 3, "n_startup_trials": 10, "multivariate": False}
    assert config.early_stopping == {"type": "asha", "min_resource": 1, "reduction_factor": 3,
                                     "min_early_stopping_rate": 0, "bootstrap_count": 0}
    config = check(body(algorithm={"type": "cmaes", "seed": 3}, early_stopping={"type": "hyperband"}))
    assert config.algorithm == {"type": "cmaes", "seed": 3, "n_startup_trials": 1}
    assert config.early_stopping == {"type": "hyperband", "min_resource": 1, "max_resource": 3,
                                     "reduction_factor": 3, "bootstrap_count": 0}  # tiny_spec runs 3 epochs
    assert check(body(early_stopping={"type": "none"})).early_stopping is None


def test_objectives_make_a_multi_objective_sweep_with_nsga2() -> None:
    raw = body(objectives=[{"metric": "val_loss"}, {"metric": "val_accuracy"}], early_stopping=None)
    raw.pop("objective")
    config = check(raw)
    assert config.objectives == [{"metric": "val_loss", "mode": "min"}, {"metric": "val_accuracy", "mode": "max"}]
    assert config.objective == config.objectives[0]  # each trial's checkpoint keeps the first objective's best
    assert config.algorithm == {"type": "nsga2", "seed": 3, "population_size": 50}
    found = errors_of({**raw, "early_stopping": {"type": "median"}, "algorithm": {"type": "cmaes"}})
    assert "cmaes optimises one objective" in found["algorithm.type"]
    assert "cannot stop trials early" in found["early_stopping"]
    assert "not both" in errors_of({**raw, "objective": {"metric": "loss"}})["objective"]
