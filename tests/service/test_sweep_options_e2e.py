"""Every sweep option the spec offers that test_sweeps_optuna_e2e.py and test_sweeps_e2e.py do not train:
the `random`, `cmaes` and `qmc` samplers, the `median`, `hyperband` and `none` pruners and a three-objective
sweep, each through gunicorn, the session's real worker, Postgres and real Keras.

The sweeps are submitted together (parallelism 1 each) so their trials share the worker's queue; each trial
is a few epochs of iris. Besides what the API shows, each option is checked for what only it leaves behind
in the study's state (`jobs.trial_attrs`, `sweeps.study_attrs`: CMA-ES's generation, QMC's sample counter,
Hyperband's rung values in each trial's bracket), so a test fails if the option were ignored.
"""
from __future__ import annotations

import binascii
from collections.abc import Iterator
from typing import Any

import optuna
import pytest
from sqlalchemy import select

from tests.conftest import tiny_spec
from tests.service.test_sweeps_optuna_e2e import FAST, by_trial, finished, get, submit

EPOCHS = 4
LR, DROPOUT = "optimizer.learning_rate", "model.layers[1].rate"
LR_RANGE, DROPOUT_RANGE = (1e-3, 0.1), (0.0, 0.5)
# Good and hopeless learning rates alternate (a grid parameter cycles: trial i takes RATES[i]).
RATES = [0.05, 1e-7, 0.03, 2e-7]
HOPELESS = (1, 3)


def base(epochs: int = EPOCHS) -> dict[str, Any]:
    return tiny_spec(model={"input_shape": [4], "layers": [{"type": "dense", "units": 8, "activation": "relu"},
                                                           {"type": "dropout", "rate": 0.1},
                                                           {"type": "dense", "units": 3, "activation": "softmax"}]},
                     training={"epochs": epochs, "batch_size": 16, "seed": 1}, diagnostics=FAST)


CONTINUOUS = {LR: {"type": "log_uniform", "low": LR_RANGE[0], "high": LR_RANGE[1]},
              DROPOUT: {"type": "uniform", "low": DROPOUT_RANGE[0], "high": DROPOUT_RANGE[1]}}
GRID_LR = {LR: {"type": "grid", "values": RATES},
           DROPOUT: {"type": "uniform", "low": DROPOUT_RANGE[0], "high": DROPOUT_RANGE[1]}}
VAL_LOSS = {"metric": "val_loss", "mode": "min"}

BODIES: dict[str, dict[str, Any]] = {
    "random": {"search": CONTINUOUS, "max_trials": 3, "seed": 11, "algorithm": {"type": "random"},
               "early_stopping": {"type": "none"}},
    "cmaes": {"search": CONTINUOUS, "max_trials": 4, "seed": 12, "algorithm": {"type": "cmaes", "n_startup_trials": 1}},
    "qmc": {"search": CONTINUOUS, "max_trials": 4, "seed": 13, "algorithm": {"type": "qmc"}},
    "qmc again": {"search": CONTINUOUS, "max_trials": 2, "seed": 13, "algorithm": {"type": "qmc"}},
    # min_trials 1, grace_epochs 0: judged from epoch 1 against the median of the completed trials.
    "median": {"search": GRID_LR, "max_trials": 4, "seed": 14, "algorithm": {"type": "random"},
               "early_stopping": {"type": "median", "grace_epochs": 0, "min_trials": 1}},
    # max_resource left out: the base's epochs. Three brackets, first rungs at epochs 1, 2 and 4.
    "hyperband": {"search": GRID_LR, "max_trials": 4, "seed": 15, "algorithm": {"type": "random"},
                  "early_stopping": {"type": "hyperband", "min_resource": 1, "reduction_factor": 2}},
    "three objectives": {"search": CONTINUOUS, "max_trials": 3, "seed": 16,
                         "objectives": [{"metric": "val_loss"}, {"metric": "val_accuracy"}, {"metric": "loss"}]},
}
ECHOED_ALGORITHM = {
    "random": {"type": "random", "seed": 11},
    "cmaes": {"type": "cmaes", "seed": 12, "n_startup_trials": 1},
    "qmc": {"type": "qmc", "seed": 13, "qmc_type": "sobol", "scramble": True},
    "qmc again": {"type": "qmc", "seed": 13, "qmc_type": "sobol", "scramble": True},
    "median": {"type": "random", "seed": 14},
    "hyperband": {"type": "random", "seed": 15},
    "three objectives": {"type": "nsga2", "seed": 16, "population_size": 50},
}
ECHOED_EARLY_STOPPING = {
    "median": {"type": "median", "grace_epochs": 0, "min_trials": 1},
    "hyperband": {"type": "hyperband", "min_resource": 1, "max_resource": EPOCHS, "reduction_factor": 2,
                  "bootstrap_count": 0},
}


@pytest.fixture(scope="module")
def sweeps(api_url: str, auth: dict[str, str], worker: Any) -> dict[str, dict[str, Any]]:
    """Every sweep above, submitted at once and waited for: {name: the finished sweep}."""
    submitted = {}
    for name, body in BODIES.items():
        body = {"name": name, "base": base(), "parallelism": 1, **body}
        if "objectives" not in body:
            body["objective"] = VAL_LOSS
        submitted[name] = submit(api_url, auth, body)
    done = {}
    for name, sweep in submitted.items():
        try:
            done[name] = finished(api_url, auth, sweep["id"], timeout=600)
        except AssertionError:
            print(get(api_url, auth, f"/v1/sweeps/{sweep['id']}"), worker.output()[-6000:])
            raise
    return done


@pytest.fixture(scope="module")
def db(settings: Any) -> Iterator[Any]:
    from trainyard.db import Database

    database = Database(settings.database_url)
    yield database
    database.dispose()


def trial_attrs(db: Any, sweep_id: str) -> dict[int, dict[str, Any]]:
    """What the sampler and pruner recorded on each trial (jobs.trial_attrs), by trial number."""
    from trainyard.db.models import Job

    with db.session() as s:
        rows = s.execute(select(Job.trial_index, Job.trial_attrs).where(Job.sweep_id == sweep_id))
        return {index: dict(attrs or {}) for index, attrs in rows}


def study_attrs(db: Any, sweep_id: str) -> dict[str, Any]:
    from trainyard.db.sweeps import Sweep

    with db.session() as s:
        return dict(s.get(Sweep, sweep_id).study_attrs or {})


@pytest.mark.parametrize("name", list(BODIES))
def test_each_option_trains_every_trial_within_the_search(sweeps: dict[str, dict[str, Any]], name: str) -> None:
    sweep = sweeps[name]
    assert sweep["status"] == "completed", sweep
    assert sweep["algorithm"] == ECHOED_ALGORITHM[name]
    assert sweep["early_stopping"] == ECHOED_EARLY_STOPPING.get(name)  # `none` is stored as no pruner
    trials = by_trial(sweep)
    assert [t["trial"] for t in trials] == list(range(BODIES[name]["max_trials"]))  # each index once
    assert len({t["job_id"] for t in trials}) == len(trials)
    for t in trials:
        assert t["status"] == "succeeded" and t["epochs"] >= 1 and t["value"] is not None, t
        assert len(t["intermediate_values"]) == t["epochs"] and None not in t["intermediate_values"]
        assert DROPOUT_RANGE[0] <= t["params"][DROPOUT] <= DROPOUT_RANGE[1], t["params"]
        if BODIES[name]["search"] is GRID_LR:
            assert t["params"][LR] == RATES[t["trial"]]
        else:
            assert LR_RANGE[0] <= t["params"][LR] <= LR_RANGE[1], t["params"]
    params = [(t["params"][LR], t["params"][DROPOUT]) for t in trials]
    assert len(set(params)) == len(params)  # every trial got values of its own
    print(f"\n{name}: " + ", ".join(f"{t['trial']}: lr {t['params'][LR]:.3g} dropout {t['params'][DROPOUT]:.3g} "
                                    f"-> {t['value']:.3f} ({t['stop_reason']}, {t['epochs']} ep)" for t in trials))


def test_random_with_no_pruner_runs_every_epoch_unjudged(sweeps: dict[str, dict[str, Any]], db: Any) -> None:
    sweep = sweeps["random"]
    assert all(t["stop_reason"] == "completed" and t["epochs"] == EPOCHS for t in sweep["trials"])
    # No sampler or pruner kept anything: no CMA-ES generation, no QMC counter, no rung.
    assert trial_attrs(db, sweep["id"]) == {0: {}, 1: {}, 2: {}}
    assert study_attrs(db, sweep["id"]) == {}


def test_cmaes_samples_every_trial_after_its_startup_trials(sweeps: dict[str, dict[str, Any]], db: Any) -> None:
    attrs = trial_attrs(db, sweeps["cmaes"]["id"])
    # Trial 0 is the independent (random) startup trial; CMA-ES asked for the rest (its first generation:
    # a population of 6 for two dimensions).
    assert "cma:generation" not in attrs[0]
    assert [attrs[i].get("cma:generation") for i in (1, 2, 3)] == [0, 0, 0], attrs


def test_qmc_asks_the_same_points_for_the_same_seed(sweeps: dict[str, dict[str, Any]], db: Any) -> None:
    first, again = by_trial(sweeps["qmc"]), by_trial(sweeps["qmc again"])
    assert [t["params"] for t in again] == [t["params"] for t in first[:2]]
    # Trial 0 infers the search space (drawn independently); the others are points 0, 1, 2 of the
    # scrambled Sobol sequence, counted in the study's attributes.
    counters = {k: v for k, v in study_attrs(db, sweeps["qmc"]["id"]).items() if k.startswith("qmc:")}
    assert list(counters.values()) == [2], counters
    counters_again = {k: v for k, v in study_attrs(db, sweeps["qmc again"]["id"]).items() if k.startswith("qmc:")}
    assert counters_again == {k: 0 for k in counters}  # the same sequence (same seed and search space)


def test_median_prunes_the_hopeless_trials_at_the_first_epoch(sweeps: dict[str, dict[str, Any]]) -> None:
    trials = by_trial(sweeps["median"])
    assert trials[0]["stop_reason"] == "completed" and trials[0]["epochs"] == EPOCHS  # nothing to compare with
    for bad in HOPELESS:  # worse than the median of the completed trials at epoch 1 (grace_epochs 0)
        assert trials[bad]["stop_reason"] == "sweep_pruned" and trials[bad]["epochs"] == 1, trials[bad]
    assert sweeps["median"]["best"]["trial"] not in HOPELESS


def hyperband_brackets(sweep: dict[str, Any]) -> list[int]:
    """Each trial's bracket as Optuna's HyperbandPruner assigns it: a hash of the study's name (the sweep's
    id) and the trial's number, over the brackets' trial budgets."""
    rule = sweep["early_stopping"]
    pruner = optuna.pruners.HyperbandPruner(min_resource=rule["min_resource"], max_resource=rule["max_resource"],
                                            reduction_factor=rule["reduction_factor"])
    pruner._try_initialization(None)  # an int max_resource: no trials needed
    budgets = pruner._trial_allocation_budgets
    assert budgets == [4, 3, 3]  # three brackets for epochs 4 halved from 1
    out = []
    for number in range(sweep["max_trials"]):
        n = binascii.crc32(f"{sweep['id']}_{number}".encode()) % sum(budgets)
        out.append(next(b for b in range(len(budgets)) if n < sum(budgets[:b + 1])))
    return out


def test_hyperband_judges_each_trial_at_its_brackets_first_rung(sweeps: dict[str, dict[str, Any]], db: Any) -> None:
    sweep = sweeps["hyperband"]
    trials, attrs = by_trial(sweep), trial_attrs(db, sweep["id"])
    brackets = hyperband_brackets(sweep)
    print(f"\nhyperband brackets {brackets}; stopped {[(t['stop_reason'], t['epochs']) for t in trials]}")
    for t, bracket in zip(trials, brackets):
        first_rung = 2 ** bracket  # min_resource x reduction_factor ^ bracket
        if t["epochs"] >= first_rung:  # the pruner recorded the objective at that epoch, not at epoch 1
            assert attrs[t["trial"]]["completed_rung_0"] == t["intermediate_values"][first_rung - 1], (bracket, attrs)
        if t["stop_reason"] == "sweep_pruned":
            assert t["epochs"] in (first_rung, 2 * first_rung) and t["epochs"] < EPOCHS, (bracket, t)
    assert trials[0]["stop_reason"] == "completed"  # the first trial of its bracket: always promoted
    for bad in HOPELESS:  # after a good trial of its own bracket, a hopeless one stops at the first rung
        bracket = brackets[bad]
        if 2 ** bracket < EPOCHS and any(brackets[good] == bracket for good in (0, 2) if good < bad):
            assert trials[bad]["stop_reason"] == "sweep_pruned" and trials[bad]["epochs"] == 2 ** bracket


def test_three_objectives_report_their_pareto_front(sweeps: dict[str, dict[str, Any]], api_url: str,
                                                    auth: dict[str, str]) -> None:
    sweep = sweeps["three objectives"]
    assert [o["metric"] for o in sweep["objectives"]] == ["val_loss", "val_accuracy", "loss"]
    signs = [1 if o["mode"] == "min" else -1 for o in sweep["objectives"]]
    assert signs == [1, -1, 1]
    done = {}
    for t in sweep["trials"]:  # its values are the three objectives at its best epoch
        rows = {r["epoch"]: r for r in get(api_url, auth, f"{t['links']['job']}/metrics")["epochs"]}
        assert t["values"] == [rows[t["best_epoch"]][m] for m in ("val_loss", "val_accuracy", "loss")]
        done[t["trial"]] = [s * v for s, v in zip(signs, t["values"])]  # all minimised

    def dominates(a: list[float], b: list[float]) -> bool:
        return all(x <= y for x, y in zip(a, b)) and a != b

    front = set(sweep["pareto_front"])
    assert front
    for trial, values in done.items():
        assert any(dominates(o, values) for n, o in done.items() if n != trial) == (trial not in front), (done, front)
