"""A sweep as an Optuna study rebuilt from its trials (trainyard/sweeps/study.py); no database.

Each ask rebuilds the study from records as the controller reads them from the trial jobs, so these tests
check what the rebuild must keep: the same records give the same next trial, what samplers and pruners
store in system attributes survives, and a grid gives the trials the hand-written plan gave.
"""
from __future__ import annotations

import itertools
import json
import math
import random
from typing import Any

from trainyard.sweeps.study import SweepStudy, TrialRecord

LR = {"type": "log_uniform", "low": 1e-4, "high": 1e-1}


def config(search: dict[str, Any], algorithm: dict[str, Any], seed: int = 1, **extra: Any) -> dict[str, Any]:
    return {"search": search, "objective": {"metric": "val_loss", "mode": "min"}, "seed": seed,
            "algorithm": {"seed": seed, **algorithm}, "early_stopping": None, **extra}


def run(cfg: dict[str, Any], n: int, score: Any = None, sweep_id: str = "swp_t") -> list[dict[str, Any]]:
    """Ask n trials one at a time, rebuilding the study each time; with `score`, each completes at once."""
    records: list[TrialRecord] = []
    study_attrs: dict[str, Any] = {}
    for index in range(n):
        study = SweepStudy(sweep_id, cfg, records, study_attrs)
        values, attrs = study.ask()
        study_attrs = study.study_attrs
        state, result = ("complete", [score(values)]) if score else ("running", None)
        records.append(TrialRecord(index, state, values, result, {}, attrs))
    return [r.params for r in records]


def canonical(values: dict[str, Any]) -> str:
    return json.dumps(values, sort_keys=True)


def test_grid_parity_same_seed_same_trials_each_combination_once() -> None:
    search = {"optimizer.learning_rate": {"type": "grid", "values": [0.1, 0.01]},
              "model.layers[0].units": {"type": "grid", "values": [8, 16, 32]}}
    trials = run(config(search, {"type": "grid"}, seed=4), 6)
    # The trials the hand-written plan gave (the Cartesian product), each once; GridSampler shuffles their
    # order with the seed.
    before = [dict(zip(search, combo)) for combo in itertools.product([0.1, 0.01], [8, 16, 32])]
    assert sorted(map(canonical, trials)) == sorted(map(canonical, before))
    assert run(config(search, {"type": "grid"}, seed=4), 6) == trials
    # Values may be whole objects: Optuna chooses among their indices.
    objects = {"optimizer": {"type": "grid", "values": [{"type": "sgd"}, {"type": "adam", "learning_rate": 0.01}]}}
    assert sorted(map(canonical, run(config(objects, {"type": "grid"}), 2))) == sorted(
        canonical({"optimizer": v}) for v in objects["optimizer"]["values"])


def test_grid_parameters_cycle_under_random_draws_like_the_old_plan() -> None:
    search = {"model.layers[0].units": {"type": "grid", "values": [8, 16]}, "optimizer.learning_rate": LR}
    trials = run(config(search, {"type": "random"}, seed=5), 6)
    assert [t["model.layers[0].units"] for t in trials] == [8, 16, 8, 16, 8, 16]
    assert len({t["optimizer.learning_rate"] for t in trials}) == 6


def test_random_types_stay_in_range_and_the_same_seed_gives_the_same_trials() -> None:
    search = {"optimizer.learning_rate": {"type": "uniform", "low": 0.5, "high": 1.5},
              "model.layers[0].units": {"type": "int_uniform", "low": 2, "high": 5},
              "model.layers[1].units": {"type": "choice", "values": [3, 4]},
              "training.seed": {"type": "log_uniform", "low": 1e-5, "high": 1e-1}}
    trials = run(config(search, {"type": "random"}, seed=1), 60)
    uniform = [t["optimizer.learning_rate"] for t in trials]
    ints = [t["model.layers[0].units"] for t in trials]
    logs = [t["training.seed"] for t in trials]
    assert all(0.5 <= v <= 1.5 for v in uniform) and max(uniform) - min(uniform) > 0.7
    assert all(isinstance(v, int) for v in ints) and set(ints) == {2, 3, 4, 5}  # both ends included
    assert {t["model.layers[1].units"] for t in trials} == {3, 4}
    assert all(1e-5 <= v <= 1e-1 for v in logs) and min(logs) < 1e-3  # log-uniform reaches the low decades
    assert all(float(f"{v:.6g}") == v for v in uniform + logs)  # 6 significant digits
    random.seed(0)  # independent of Python's global random state
    assert run(config(search, {"type": "random"}, seed=1), 10) == trials[:10]  # more trials keep the first ones
    assert run(config(search, {"type": "random"}, seed=2), 10) != trials[:10]


def test_sweeps_with_neighbouring_seeds_share_no_draws() -> None:
    # Each ask's sampler is seeded from (seed, trial number); seed + number made trial n + 1 of seed s the
    # same draw as trial n of seed s + 1, so sweeps seeded 1, 2, 3 were shifted copies of each other.
    for algorithm in ({"type": "random"}, {"type": "tpe", "n_startup_trials": 10, "multivariate": False},
                      {"type": "cmaes", "n_startup_trials": 1},
                      {"type": "nsga2", "population_size": 50}):
        draws = [{canonical(t) for t in run(config({"optimizer.learning_rate": LR, "training.seed": LR},
                                                   algorithm, seed=seed), 6)} for seed in (1, 2, 3)]
        assert not (draws[0] & draws[1]) and not (draws[1] & draws[2]), algorithm["type"]


def test_every_algorithm_asks_valid_trials_and_keeps_its_state_across_rebuilds() -> None:
    search = {"optimizer.learning_rate": LR, "model.layers[0].units": {"type": "int_uniform", "low": 4, "high": 64}}

    def score(values: dict[str, Any]) -> float:
        return abs(math.log10(values["optimizer.learning_rate"]) + 2) + abs(values["model.layers[0].units"] - 40) / 40

    for algorithm in ({"type": "tpe", "n_startup_trials": 3, "multivariate": True}, {"type": "cmaes", "n_startup_trials": 1},
                      {"type": "qmc", "qmc_type": "sobol", "scramble": True}):
        trials = run(config(search, algorithm, seed=3), 8, score)
        assert run(config(search, algorithm, seed=3), 8, score) == trials, algorithm["type"]
        assert len({str(t) for t in trials}) == 8, algorithm["type"]
        for t in trials:
            assert 1e-4 <= t["optimizer.learning_rate"] <= 1e-1 and 4 <= t["model.layers[0].units"] <= 64


def test_running_trials_enter_the_study_running_for_tpes_constant_liar() -> None:
    # Trials still queued or running are RUNNING trials of the rebuilt study: TPE's constant liar counts
    # them as bad ones, so parallel asks spread out rather than pile onto the current best.
    search = {"model.layers[0].units": {"type": "choice", "values": [8, 16, 32, 64]}}
    cfg = config(search, {"type": "tpe", "n_startup_trials": 0, "multivariate": False})
    records = [TrialRecord(0, "complete", {"model.layers[0].units": 8}, [0.9], {1: 0.9}, {}),
               TrialRecord(1, "running", {"model.layers[0].units": 16}, None, {1: 0.5}, {}),
               TrialRecord(2, "pruned", {"model.layers[0].units": 32}, None, {1: 0.95}, {}),
               TrialRecord(3, "fail", {"model.layers[0].units": 64}, None, {}, {})]
    study = SweepStudy("swp_t", cfg, records)
    assert [t.state.name for t in study.study.trials] == ["COMPLETE", "RUNNING", "PRUNED", "FAIL"]
    assert study.study.trials[1].intermediate_values == {1: 0.5}
    assert study.study.sampler._constant_liar is True
    values, _ = study.ask()
    assert [t.state.name for t in study.study.trials][-1] == "RUNNING"  # asked, not told: its job will tell
    assert values["model.layers[0].units"] in (8, 16, 32, 64)


def test_successive_halving_rungs_survive_the_rebuild() -> None:
    cfg = config({"optimizer.learning_rate": LR}, {"type": "random"},
                 early_stopping={"type": "asha", "min_resource": 1, "reduction_factor": 2,
                                 "min_early_stopping_rate": 0, "bootstrap_count": 0})
    records: list[TrialRecord] = []
    curves = {0: [0.5, 0.4, 0.3, 0.2], 1: [0.6, 0.5, 0.45, 0.4], 2: [0.9, 0.85], 3: [0.55, 0.42]}
    pruned_at: dict[int, int] = {}
    for index, curve in curves.items():
        attrs: dict[str, Any] = {}
        for epoch in range(1, len(curve) + 1):
            record = TrialRecord(index, "running", {"optimizer.learning_rate": 0.01}, None,
                                 dict(enumerate(curve[:epoch], start=1)), attrs)
            prune, attrs = SweepStudy("swp_t", cfg, [*records, record]).should_prune(index)
            if prune:
                pruned_at[index] = epoch
                break
        state = "pruned" if index in pruned_at else "complete"
        records.append(TrialRecord(index, state, {"optimizer.learning_rate": 0.01},
                                   None if index in pruned_at else [min(curve)],
                                   dict(enumerate(curve[:pruned_at.get(index, len(curve))], start=1)), attrs))
    # Trial 0 sets every rung alone (bootstrap 0 promotes it); trial 1 is the worse half at rung 0 (0.6 vs
    # 0.5); trial 2 is worse at rung 0 too; trial 3's 0.55 is in the better half of (0.5, 0.6, 0.9, 0.55)
    # at rung 0, then 0.42 at epoch 2 is beaten by trial 0's 0.4 of (0.4, 0.42).
    assert records[0].system_attrs == {"completed_rung_0": 0.5, "completed_rung_1": 0.4, "completed_rung_2": 0.2}
    assert pruned_at == {1: 1, 2: 1, 3: 2}
    assert records[3].system_attrs == {"completed_rung_0": 0.55, "completed_rung_1": 0.42}
