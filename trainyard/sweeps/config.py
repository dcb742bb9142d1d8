"""`validate_sweep`: a `POST /v1/sweeps` body in, a checked sweep with its whole plan out (or SweepError).

Everything that can be known before a trial runs is checked here, so a sweep that is accepted never
fails for a reason its body already showed:
- the base spec with the normal job-spec validator (errors under `base.`);
- every search path against the normalised base, every grid/choice value and both bounds of every range
  on its own (errors under `search.<path>.values[i]`, `.low`, `.high`);
- the objective against the keys the trials log (`objective.metric`, or `objectives[i].metric`);
- `algorithm` and `early_stopping` (trainyard/sweeps/algorithms.py) and how they fit the search;
- a grid search's every combination: each trial's spec is built and validated exactly as it will be
  submitted. Other algorithms choose values as trials finish; every value and bound is checked on its own.
"""
from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any

from trainyard.spec import DatasetLookup, SpecError, SpecLimits, monitor_mode, validate_spec
from trainyard.spec.checks import has_validation_data, resolve_dataset
from trainyard.spec.errors import truncate_errors
from trainyard.spec.fields import reusing_loads
from trainyard.spec.hints import hint_budget, unknown_field_message
from trainyard.sweeps.algorithms import ALGORITHMS, EARLY_STOPPING, MULTI_OBJECTIVE, SEED_MAX, load_typed
from trainyard.sweeps.search import Param, apply, grid_plan, grid_size, has_random, overlaps, parse_param

Errors = list[dict[str, str]]

TOP_LEVEL = ("name", "base", "search", "objective", "objectives", "max_trials", "parallelism", "algorithm",
             "early_stopping", "seed")
# Each trial gets its own name, and the sweep points every trial's checkpoint at the objective.
NOT_SEARCHABLE = ("name", "version", "callbacks.checkpoint")
MODES = ("auto", "min", "max")
MAX_SEARCH_FIELDS = 20
MAX_PARALLELISM = 64
NAME_MAX = 100
_NAME_RE = re.compile(r"^\w[\w .()\-]*\Z")
# How many failing trials one response names before it stops looking.
_MAX_TRIAL_ERRORS = 3
# Grid and choice values of all parameters together: each is validated as a trial spec on its own.
MAX_SEARCH_VALUES = 200
# Characters of a value quoted in an error message.
_SHOWN_MAX = 200


class SweepError(Exception):
    def __init__(self, errors: Errors) -> None:
        errors = truncate_errors(errors)
        super().__init__("; ".join(f"{e['field']}: {e['message']}" for e in errors[:3]))
        self.errors = errors


@dataclass
class SweepConfig:
    name: str | None
    base: dict[str, Any]
    params: list[Param]
    objective: dict[str, str]
    max_trials: int
    parallelism: int
    early_stopping: dict[str, Any] | None
    seed: int
    algorithm: dict[str, Any]
    objectives: list[dict[str, str]] | None = None

    def as_json(self) -> dict[str, Any]:
        """The sweep's settings with every default filled: what is stored and shown."""
        return {
            "search": {p.path: p.as_json() for p in self.params},
            "objective": self.objective,
            "max_trials": self.max_trials,
            "parallelism": self.parallelism,
            "early_stopping": self.early_stopping,
            "seed": self.seed,
            "algorithm": self.algorithm,
            "objectives": self.objectives,
        }


def trial_name(sweep_name: str | None, index: int) -> str:
    return f"{(sweep_name or 'sweep')[:NAME_MAX].rstrip()} (trial {index})"


def trial_spec(base: dict[str, Any], values: dict[str, Any], objective: dict[str, str], sweep_name: str | None,
               index: int, *, datasets: DatasetLookup | None, limits: SpecLimits) -> dict[str, Any]:
    """The normalised spec of trial `index`: the base with its values, its name and the objective's
    checkpoint. Raises SpecError like `validate_spec`."""
    raw = apply(base, {**values, "name": trial_name(sweep_name, index),
                       "callbacks.checkpoint": {"monitor": objective["metric"], "mode": objective["mode"]}})
    return validate_spec(raw, datasets=datasets, limits=limits)


def _int(raw: dict[str, Any], key: str, low: int, high: int, errors: Errors, default: int | None = None) -> int | None:
    value = raw.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        errors.append({"field": key, "message": f"Must be a whole number from {low} to {high}."})
        return None
    return value


def _objective(raw: Any, base: dict[str, Any], datasets: DatasetLookup | None, errors: Errors,
               field: str = "objective") -> dict[str, str] | None:
    if not isinstance(raw, dict) or not isinstance(raw.get("metric"), str):
        errors.append({"field": f"{field}.metric" if isinstance(raw, dict) else field,
                       "message": "Required: the objective is {\"metric\": <a logged key>, \"mode\": min|max|auto}."})
        return None
    errors += [{"field": f"{field}.{k}", "message": "Unknown field."} for k in raw if k not in ("metric", "mode")]
    mode = raw.get("mode", "auto")
    if mode not in MODES:
        errors.append({"field": f"{field}.mode", "message": f"Must be one of: {', '.join(MODES)}."})
        return None
    metric = raw["metric"]
    logged = ["loss", *base["metrics"]]
    if has_validation_data(base, resolve_dataset(base["dataset"]["id"], datasets)):
        logged += [f"val_{key}" for key in logged]
    if metric not in logged:
        errors.append({"field": f"{field}.metric",
                       "message": f"The trials never log {metric}; allowed: {', '.join(logged)}."})
        return None
    return {"metric": metric, "mode": monitor_mode(metric) if mode == "auto" else mode}


def _objectives(raw: dict[str, Any], base: dict[str, Any], datasets: DatasetLookup | None,
                errors: Errors) -> tuple[dict[str, str] | None, list[dict[str, str]] | None]:
    """`objective` (one) or `objectives` (two or three, a multi-objective sweep): (the first, the list or None)."""
    if "objectives" not in raw:
        return _objective(raw.get("objective"), base, datasets, errors), None
    listed = raw["objectives"]
    if "objective" in raw:
        errors.append({"field": "objective", "message": "Give objective or objectives, not both."})
        return None, None
    if not isinstance(listed, list) or not 2 <= len(listed) <= 3:
        errors.append({"field": "objectives", "message": "Must be a list of 2 or 3 objectives; "
                                                         "for one, use objective."})
        return None, None
    found = [_objective(item, base, datasets, errors, f"objectives[{i}]") for i, item in enumerate(listed)]
    if any(o is None for o in found):
        return None, None
    metrics = [o["metric"] for o in found if o]
    for i, metric in enumerate(metrics):
        if metric in metrics[:i]:
            errors.append({"field": f"objectives[{i}].metric", "message": f"{metric} is already an objective."})
    return found[0], found  # type: ignore[return-value]


def _algorithm(raw: Any, params: list[Param], multi: bool, errors: Errors) -> dict[str, Any] | None:
    """The algorithm with its defaults; left out, today's behaviour: a grid when every parameter is a grid,
    random draws otherwise (NSGA-II for several objectives)."""
    if raw is None:
        kind = "nsga2" if multi else ("grid" if params and not has_random(params) else "random")
        raw = {"type": kind}
    algorithm = load_typed(raw, ALGORITHMS, "algorithm", errors)
    if algorithm is None:
        return None
    kind = algorithm["type"]
    if kind == "grid" and has_random(params):
        other = next(p for p in params if p.type != "grid")
        errors.append({"field": "algorithm.type", "message": f"A grid searches grid parameters only; "
                                                             f"search.{other.path} is {other.type}."})
    if multi and kind not in MULTI_OBJECTIVE:
        errors.append({"field": "algorithm.type", "message": f"{kind} optimises one objective; with objectives use "
                                                             f"one of: {', '.join(MULTI_OBJECTIVE)}."})
    return algorithm


def _early_stopping(raw: Any, base: dict[str, Any], multi: bool, errors: Errors) -> dict[str, Any] | None:
    if raw is None:
        return None
    rule = load_typed(raw, EARLY_STOPPING, "early_stopping", errors)
    if rule is None or rule["type"] == "none":
        return None
    if multi:
        errors.append({"field": "early_stopping", "message": "Pruners judge one objective; a sweep with "
                                                             "objectives cannot stop trials early."})
    if rule["type"] == "hyperband":
        if rule["max_resource"] is None:
            rule["max_resource"] = base["training"]["epochs"]
        if rule["max_resource"] < rule["min_resource"]:
            errors.append({"field": "early_stopping.max_resource",
                           "message": f"Must be at least min_resource ({rule['min_resource']})."})
    return rule


def _trial_errors(field: str, value: Any, exc: SpecError) -> dict[str, str]:
    first = exc.errors[0]
    more = f" (and {len(exc.errors) - 1} more)" if len(exc.errors) > 1 else ""
    shown = repr(value)
    if len(shown) > _SHOWN_MAX:  # a value may be a whole model
        shown = shown[:_SHOWN_MAX - 3] + "..."
    return {"field": field, "message": f"{shown} gives an invalid job spec: "
                                       f"{first['field'] or 'spec'}: {first['message']}{more}"}


def validate_sweep(raw: Any, *, datasets: DatasetLookup | None, limits: SpecLimits,
                   max_trials_limit: int) -> SweepConfig:
    """Check a sweep body and plan its trials; raises SweepError with every problem's field path.

    Its cost is linear in the body: at most MAX_SEARCH_VALUES values and `max_trials_limit` trials are
    validated, and the objects they share with the base (or with each other) are checked once.
    """
    # One hint budget for every spec the sweep validates: a sweep's many trials get no more
    # "did you mean" look-ups than one job does.
    with reusing_loads(), hint_budget():
        return _validate_sweep(raw, datasets=datasets, limits=limits, max_trials_limit=max_trials_limit)


def _validate_sweep(raw: Any, *, datasets: DatasetLookup | None, limits: SpecLimits,
                    max_trials_limit: int) -> SweepConfig:
    if not isinstance(raw, dict):
        raise SweepError([{"field": "", "message": "The sweep must be a JSON object."}])
    errors: Errors = [{"field": k, "message": unknown_field_message(k, TOP_LEVEL)} for k in raw if k not in TOP_LEVEL]
    try:
        base = validate_spec(raw.get("base"), datasets=datasets, limits=limits)
    except SpecError as exc:
        errors += [{**e, "field": f"base.{e['field']}" if e["field"] else "base"} for e in exc.errors]
        raise SweepError(errors) from None

    name = raw.get("name", base.get("name"))
    if name is not None and (not isinstance(name, str) or len(name) > NAME_MAX or not _NAME_RE.match(name)):
        errors.append({"field": "name", "message": f"Must be 1 to {NAME_MAX} letters, digits, spaces and . _ - ( ), "
                                                   "starting with a letter or digit."})
    objective, objectives = _objectives(raw, base, datasets, errors)

    search = raw.get("search")
    params: list[Param] = []
    if not isinstance(search, dict) or not 1 <= len(search) <= MAX_SEARCH_FIELDS:
        errors.append({"field": "search",
                       "message": f"Must be an object of 1 to {MAX_SEARCH_FIELDS} field paths, each with a parameter."})
    else:
        for path, spec in search.items():
            param, param_errors = parse_param(path, spec, base, NOT_SEARCHABLE)
            errors += param_errors
            if param is not None:
                params.append(param)
        errors += overlaps(params)
        values = sum(len(p.values) for p in params)
        if values > MAX_SEARCH_VALUES:
            errors.append({"field": "search", "message": f"The search lists {values} values; at most "
                                                         f"{MAX_SEARCH_VALUES} are allowed in all."})

    max_trials = _int(raw, "max_trials", 1, max_trials_limit, errors)
    algorithm = _algorithm(raw.get("algorithm"), params, objectives is not None, errors) \
        if params and len(params) == len(search or {}) else None
    if algorithm is not None:
        size = grid_size(params)
        if size > max_trials_limit:
            errors.append({"field": "search", "message": f"The grid has {size} combinations; a sweep may run at "
                                                         f"most {max_trials_limit} trials."})
        elif algorithm["type"] == "grid":
            if max_trials is None and "max_trials" not in raw:
                max_trials = size
            elif max_trials is not None and max_trials != size:
                errors.append({"field": "max_trials", "message": f"The grid has {size} combinations and a grid "
                                                                 f"runs each once: leave max_trials out or set it to {size}."})
        elif max_trials is None and "max_trials" not in raw:
            errors.append({"field": "max_trials", "message": "Required when the search draws values at random."})
        elif max_trials is not None and max_trials % size:
            errors.append({"field": "max_trials", "message": f"Must be a multiple of {size}, the grid's combinations, "
                                                             "so that every combination gets as many random draws."})
    elif max_trials is None and "max_trials" not in raw:
        errors.append({"field": "max_trials", "message": "Required."})
    parallelism = _int(raw, "parallelism", 1, MAX_PARALLELISM, errors, default=1)
    early_stopping = _early_stopping(raw.get("early_stopping"), base, objectives is not None, errors)
    seed = _int(raw, "seed", 0, SEED_MAX, errors)
    if algorithm is not None and algorithm.get("seed") is not None:
        if seed is not None and seed != algorithm["seed"]:
            errors.append({"field": "algorithm.seed", "message": f"Differs from seed ({seed}); give one of them."})
        seed = algorithm["seed"]
    if errors or objective is None or max_trials is None or parallelism is None or algorithm is None:
        raise SweepError(errors)
    seed = secrets.randbelow(SEED_MAX + 1) if seed is None else seed
    algorithm["seed"] = seed

    def check(field: str, index: int, values: dict[str, Any], shown: Any) -> dict[str, str] | None:
        try:
            trial_spec(base, values, objective, name, index, datasets=datasets, limits=limits)
        except SpecError as exc:
            return _trial_errors(field, shown, exc)
        return None

    # Each value on its own first, so the error names the value to fix rather than a trial.
    for param in params:
        for suffix, value in param.candidates():
            found = check(f"search.{param.path}.{suffix}", 0, {param.path: value}, value)
            if found:
                errors.append(found)
    if errors:
        raise SweepError(errors)
    # A grid's trials are known now: each is checked exactly as it will be submitted.
    plan = grid_plan(params) if algorithm["type"] == "grid" else []
    for index, values in enumerate(plan):
        found = check("search", index, values, values)
        if found:
            errors.append({**found, "message": f"Trial {index}: {found['message']}"})
            if len(errors) >= _MAX_TRIAL_ERRORS:
                break
    if errors:
        raise SweepError(errors)
    return SweepConfig(name=name, base=base, params=params, objective=objective, max_trials=max_trials,
                       parallelism=parallelism, early_stopping=early_stopping, seed=seed, algorithm=algorithm,
                       objectives=objectives)
