"""A sweep as an Optuna study: Optuna's samplers ask for each trial's values, its pruners judge each epoch.

Storage: our own tables are the source of truth and the study is rebuilt from them each time it is
consulted (an in-memory study filled with `study.add_trial(create_trial(...))`):
- a trial's parameters are its job's `trial_params`, its state its job's status (queued or running ->
  RUNNING, succeeded -> COMPLETE with the job's best objective, or PRUNED when a pruner stopped it, the
  rest -> FAIL), its intermediate values the objective in its `epoch_metrics` rows (step = epoch);
- what samplers and pruners keep in Optuna's storage, the trial's and the study's system attributes
  (a grid point's id, a rung's value for successive halving, CMA-ES's state, QMC's sample counter), is
  kept in `jobs.trial_attrs` and `sweeps.study_attrs`.
Rows that the sweep, the jobs and the workers already write and lock stay the only state, so a sweep
survives API and worker restarts, takes part in job retention and tenant deletion like any job, works on
SQLite as well as Postgres, and needs no second schema kept in step with Optuna's releases. The controller
asks under the sweep's row lock (so concurrent callers never ask twice for one trial); each worker writes
only its own trial's attributes.

This module imports Optuna (about half a second): the API imports it lazily, on the first sweep request.
"""
from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import InMemoryStorage
from optuna.trial import TrialState, create_trial

from trainyard.sweeps.search import Param, param_from_json

optuna.logging.set_verbosity(optuna.logging.WARNING)
logger = logging.getLogger(__name__)

# Drawn floats keep 6 significant digits: readable in listings, and far finer than any search needs.
_DIGITS = 6


@dataclass
class TrialRecord:
    """What the study needs of one trial, read from its job."""

    index: int
    state: str  # running | complete | pruned | fail
    params: dict[str, Any]  # {path: value}, as the job got them
    values: list[float] | None = None
    intermediate: dict[int, float] = field(default_factory=dict)
    system_attrs: dict[str, Any] = field(default_factory=dict)


_STATES = {"running": TrialState.RUNNING, "complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED,
           "fail": TrialState.FAIL}


def params_of(config: dict[str, Any]) -> list[Param]:
    """The searched parameters in the order of their paths: a database may hand a JSON object's keys back in
    another order than they were sent (Postgres's JSONB does), and the order decides the draws."""
    return sorted((param_from_json(path, spec) for path, spec in config["search"].items()), key=lambda p: p.path)


def distribution(param: Param) -> BaseDistribution:
    # Grid and choice values may be whole objects: Optuna chooses among their indices.
    if param.type in ("grid", "choice"):
        return CategoricalDistribution(list(range(len(param.values))))
    if param.type == "int_uniform":
        return IntDistribution(int(param.low), int(param.high))
    return FloatDistribution(param.low, param.high, log=param.type == "log_uniform")


def to_internal(param: Param, value: Any) -> Any:
    if param.type in ("grid", "choice"):
        key = json.dumps(value, sort_keys=True)
        for i, v in enumerate(param.values):
            if json.dumps(v, sort_keys=True) == key:
                return i
        # A database may hand 1.0 back as 1: equal values, not the same JSON.
        return next(i for i, v in enumerate(param.values) if v == value and isinstance(v, bool) == isinstance(value, bool))
    return value


def to_value(param: Param, internal: Any) -> Any:
    if param.type in ("grid", "choice"):
        return param.values[internal]
    if param.type == "int_uniform":
        return int(internal)
    return min(max(float(f"{float(internal):.{_DIGITS}g}"), param.low), param.high)


def directions(config: dict[str, Any]) -> list[str]:
    return ["minimize" if o["mode"] == "min" else "maximize" for o in objectives(config)]


def objectives(config: dict[str, Any]) -> list[dict[str, str]]:
    """The sweep's objectives: `objectives` for a multi-objective sweep, else `[objective]`."""
    return config.get("objectives") or [config["objective"]]


def grid_params(params: list[Param]) -> list[Param]:
    return [p for p in params if p.type == "grid"]


def grid_combination(params: list[Param], index: int) -> dict[str, int]:
    """Trial `index`'s grid combination (as value indices), the grid parameters in path order: i mod the grid size."""
    grid = grid_params(params)
    out: dict[str, int] = {}
    for p in reversed(grid):
        index, position = divmod(index, len(p.values))
        out[p.path] = position
    return {p.path: out[p.path] for p in grid}


def make_sampler(config: dict[str, Any], params: list[Param], n: int) -> optuna.samplers.BaseSampler:
    # PartialFixedSampler and QMCSampler are marked experimental; the sweep's stored config pins what they get.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return _make_sampler(config, params, n)


def _make_sampler(config: dict[str, Any], params: list[Param], n: int) -> optuna.samplers.BaseSampler:
    """The sampler for the sweep's next ask, when `n` trials exist. Samplers are rebuilt for every ask, so
    the seed moves with `n` (a fixed seed would draw the same point again): it is mixed from (seed, n), so
    neighbouring seeds are unrelated streams (`seed + n` made seed s + 1 a copy of seed s shifted by one
    trial). The grid (shuffled once by the seed; trial n takes point n) and QMC's sequence (its counter
    lives in the study's attributes) need the same seed every time."""
    algorithm = config["algorithm"]
    kind, seed = algorithm["type"], int(config["seed"])
    step_seed = int(np.random.SeedSequence([seed, n]).generate_state(1)[0])  # < 2**32, as numpy needs
    if kind == "grid":
        return optuna.samplers.GridSampler({p.path: list(range(len(p.values))) for p in params}, seed=seed)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=step_seed)
    if kind == "tpe":
        # constant_liar: trials still running count as bad ones, so parallel trials spread out.
        return optuna.samplers.TPESampler(seed=step_seed, n_startup_trials=algorithm["n_startup_trials"],
                                          multivariate=algorithm["multivariate"], constant_liar=True)
    if kind == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=step_seed, n_startup_trials=algorithm["n_startup_trials"],
                                            warn_independent_sampling=False)
    if kind == "qmc":
        return optuna.samplers.QMCSampler(qmc_type=algorithm["qmc_type"], scramble=algorithm["scramble"],
                                          seed=seed, warn_independent_sampling=False)
    if kind == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=step_seed, population_size=algorithm["population_size"])
    raise ValueError(f"unknown algorithm {kind!r}")


def make_pruner(config: dict[str, Any]) -> optuna.pruners.BasePruner:
    rule = config.get("early_stopping")
    kind = rule["type"] if rule else "none"
    if kind == "median":
        # Old rule's names: no stop at epochs <= grace_epochs; judged once min_trials finished trials
        # reported the epoch.
        return optuna.pruners.MedianPruner(n_startup_trials=rule["min_trials"], n_warmup_steps=rule["grace_epochs"] + 1,
                                           n_min_trials=rule["min_trials"])
    if kind == "asha":
        return optuna.pruners.SuccessiveHalvingPruner(
            min_resource=rule["min_resource"], reduction_factor=rule["reduction_factor"],
            min_early_stopping_rate=rule["min_early_stopping_rate"], bootstrap_count=rule["bootstrap_count"])
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=rule["min_resource"], max_resource=rule["max_resource"],
                                              reduction_factor=rule["reduction_factor"],
                                              bootstrap_count=rule["bootstrap_count"])
    return optuna.pruners.NopPruner()


class _RebuiltStorage(InMemoryStorage):
    """Optuna's in-memory storage, taking the trials a rebuild makes without deep-copying each one: they are
    built for this study alone. (The copy was most of a rebuild's time: 0.1 s for 120 trials of 20 epochs.)"""

    def create_new_trial(self, study_id: int, template_trial: Any = None) -> int:
        if template_trial is None:
            return super().create_new_trial(study_id)
        with self._lock:
            self._check_study_id(study_id)
            trial = template_trial
            self._max_trial_id += 1
            trial_id = self._max_trial_id
            trial.number = len(self._studies[study_id].trials)
            trial._trial_id = trial_id
            self._trial_id_to_study_id_and_number[trial_id] = (study_id, trial.number)
            self._studies[study_id].trials.append(trial)
            self._update_cache(trial_id, study_id)
            return trial_id


class SweepStudy:
    """The study of one sweep, rebuilt from `records` (in trial order, numbered 0, 1, ... without gaps)."""

    def __init__(self, sweep_id: str, config: dict[str, Any], records: Iterable[TrialRecord],
                 study_attrs: dict[str, Any] | None = None) -> None:
        # Sweeps accepted before algorithms existed drew their values up front; only their pruner is asked.
        self.config = config = {**config, "algorithm": config.get("algorithm") or {"type": "random"}}
        self.params = params_of(config)
        self.dists = {p.path: distribution(p) for p in self.params}
        self.pruner = make_pruner(config)
        records = sorted(records, key=lambda r: r.index)
        self.study = optuna.create_study(storage=_RebuiltStorage(), study_name=sweep_id, directions=directions(config),
                                         sampler=make_sampler(config, self.params, len(records)), pruner=self.pruner)
        storage, study_id = self.study._storage, self.study._study_id
        for key, value in (study_attrs or {}).items():
            storage.set_study_system_attr(study_id, key, value)
        self._ids: dict[int, int] = {}
        for record in records:
            if record.index != len(self._ids):
                raise ValueError(f"trial {record.index} follows trial {len(self._ids) - 1}: trial numbers have a gap")
            self._add(record)

    def _add(self, record: TrialRecord) -> None:
        by_path = {p.path: p for p in self.params}
        params = {path: to_internal(by_path[path], value) for path, value in record.params.items() if path in by_path}
        state = _STATES[record.state]
        values = record.values if state == TrialState.COMPLETE else None
        trial = create_trial(state=state, values=values, params=params,
                             distributions={k: self.dists[k] for k in params},
                             intermediate_values=dict(record.intermediate), system_attrs=dict(record.system_attrs))
        # What study.add_trial does (create_trial validated it), keeping the trial's id.
        self._ids[record.index] = self.study._storage.create_new_trial(self.study._study_id, template_trial=trial)

    def ask(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The next trial's values `{path: value}` (in the search's order) and its system attributes. The
        asked trial stays RUNNING in this study, so asking again spreads the next one out (constant liar)."""
        n = len(self._ids)
        study = self.study
        if self.config["algorithm"]["type"] != "grid" and grid_params(self.params):
            # Grid parameters cycle through their combinations under every other algorithm; it picks the rest.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.sampler = optuna.samplers.PartialFixedSampler(grid_combination(self.params, n),
                                                                    make_sampler(self.config, self.params, n))
        trial = study.ask(self.dists)
        self._ids[n] = trial._trial_id
        values = {p.path: to_value(p, trial.params[p.path]) for p in self.params}
        return values, dict(study._storage.get_trial_system_attrs(trial._trial_id))

    @property
    def study_attrs(self) -> dict[str, Any]:
        return dict(self.study._storage.get_study_system_attrs(self.study._study_id))

    def should_prune(self, index: int) -> tuple[bool, dict[str, Any]]:
        """Whether the pruner stops trial `index` (RUNNING, with its intermediate values so far), and its
        system attributes after the pruner's look (successive halving records each rung it passes)."""
        trial_id = self._ids[index]
        frozen = self.study._storage.get_trial(trial_id)
        prune = self.pruner.prune(self.study, frozen)
        return prune, dict(self.study._storage.get_trial_system_attrs(trial_id))

    def frozen_trials(self, states: tuple[str, ...] = ("complete",)) -> list[Any]:
        return self.study.get_trials(deepcopy=False, states=tuple(_STATES[s] for s in states))


def finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


#: Up to this many completed trials importances use fANOVA (Optuna's default: 0.1 s for 8 trials, 0.3 s for
#: 60 on one core, and right from few trials); beyond, PED-ANOVA (milliseconds, but noisy under ~20 trials).
FANOVA_MAX_TRIALS = 100


def importances(study: SweepStudy) -> dict[str, float] | None:
    """Optuna's parameter importances of the first objective; None when Optuna cannot tell yet. Imports
    optuna.importance, which imports scikit-learn: workers call this, never the API."""
    from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator, get_param_importances

    complete = len(study.frozen_trials())
    evaluator = FanovaImportanceEvaluator(seed=0) if complete <= FANOVA_MAX_TRIALS else PedAnovaImportanceEvaluator()
    target = (lambda t: t.values[0]) if len(study.study.directions) > 1 else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            found = get_param_importances(study.study, evaluator=evaluator, target=target)
    except (ValueError, RuntimeError, ZeroDivisionError) as exc:
        logger.info("sweep %s: no parameter importances yet: %s", study.study.study_name, exc)
        return None
    return {name: round(float(value), 6) for name, value in found.items()}
