"""A sweep's search space: paths into a job spec, the five parameter types, and the seeded plan of trials.

Pure functions on plain JSON values; no database, no Flask. A path is dotted names with `[i]` list
indices (`optimizer.learning_rate`, `model.layers[0].units`) and must name a field that exists in the
normalised base spec. Values are chosen by Optuna's samplers as trials are submitted (trainyard/sweeps/study.py):
`grid` parameters form a Cartesian product (in the order the search lists them); `choice`, `uniform`,
`log_uniform` and `int_uniform` are Optuna distributions (categorical, float, log float, int).
"""
from __future__ import annotations

import itertools
import json
import math
import re
from dataclasses import dataclass
from typing import Any

from trainyard.spec.hints import did_you_mean, unknown_field_message

PARAM_TYPES = ("grid", "choice", "uniform", "log_uniform", "int_uniform")
MAX_VALUES = 100
#: Longest field path: no field of a spec is nested deeper than a few dozen characters, and int() refuses a
#: list index of more than 4,300 digits with ValueError.
MAX_PATH_LENGTH = 200
#: int_uniform bounds: whole numbers a float holds exactly (and that `float()` never overflows on).
MAX_INT = 2**53
_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
_PATH_RE = re.compile(rf"^{_NAME}(?:\[\d+\])*(?:\.{_NAME}(?:\[\d+\])*)*\Z")
_STEP_RE = re.compile(rf"({_NAME})|\[(\d+)\]")

Errors = list[dict[str, str]]
Step = str | int


class PathError(ValueError):
    """The path is malformed or names no field of the spec."""


def parse_path(path: str) -> tuple[Step, ...]:
    """`model.layers[0].units` -> ("model", "layers", 0, "units")."""
    if not isinstance(path, str) or not _PATH_RE.match(path):
        raise PathError("Not a field path; use dotted names with [i] indices, e.g. model.layers[0].units.")
    return tuple(name if name else int(index) for name, index in _STEP_RE.findall(path))


def get_at(spec: Any, steps: tuple[Step, ...]) -> Any:
    """The value at `steps`, or PathError naming the first step that does not exist."""
    node = spec
    for depth, step in enumerate(steps):
        if isinstance(step, int):
            if not isinstance(node, list) or step >= len(node):
                size = f"has {len(node)} items" if isinstance(node, list) else "is not a list"
                raise PathError(f"No such field in the base spec: {format_path(steps[:depth]) or 'the spec'} {size}.")
        elif not isinstance(node, dict) or step not in node:
            raise PathError(f"No such field in the base spec: {format_path(steps[:depth]) or 'the spec'} "
                            f"has no field {step!r}.")
        node = node[step]
    return node


def _with(node: Any, steps: tuple[Step, ...], value: Any) -> Any:
    """A copy of `node` with `value` at `steps`: only the containers on the way are copied."""
    if not steps:
        return value
    copied = list(node) if isinstance(node, list) else dict(node)
    copied[steps[0]] = _with(node[steps[0]], steps[1:], value)
    return copied


def format_path(steps: tuple[Step, ...]) -> str:
    out = ""
    for step in steps:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else step)
    return out


@dataclass(frozen=True)
class Param:
    path: str
    steps: tuple[Step, ...]
    type: str
    values: tuple[Any, ...] = ()
    low: float = 0.0
    high: float = 0.0

    def as_json(self) -> dict[str, Any]:
        if self.type in ("grid", "choice"):
            return {"type": self.type, "values": list(self.values)}
        return {"type": self.type, "low": self.low, "high": self.high}

    def candidates(self) -> list[tuple[str, Any]]:
        """(field suffix, value) pairs that must each give a valid spec: every listed value, or both bounds."""
        if self.type in ("grid", "choice"):
            return [(f"values[{i}]", v) for i, v in enumerate(self.values)]
        return [("low", self.low), ("high", self.high)]


def param_from_json(path: str, raw: dict[str, Any]) -> Param:
    """A parameter as `Param.as_json` stored it (already checked)."""
    if raw["type"] in ("grid", "choice"):
        return Param(path, parse_path(path), raw["type"], values=tuple(raw["values"]))
    return Param(path, parse_path(path), raw["type"], low=raw["low"], high=raw["high"])


def _is_number(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    # math.isfinite() of a huge JSON integer raises OverflowError.
    return -MAX_INT <= value <= MAX_INT if isinstance(value, int) else math.isfinite(value)


def parse_param(path: str, raw: Any, base: dict[str, Any], forbidden: tuple[str, ...] = ()) -> tuple[Param | None, Errors]:
    """One entry of `search`; errors carry `search.<path>[.<key>]` field paths."""
    if len(path) > MAX_PATH_LENGTH:  # not echoed back in full
        return None, [{"field": "search", "message": f"A field path has at most {MAX_PATH_LENGTH} characters; "
                                                     f"one has {len(path)}, starting {path[:40]!r}."}]
    field = f"search.{path}"
    errors: Errors = []
    try:
        steps = parse_path(path)
        get_at(base, steps)
    except PathError as exc:
        return None, [{"field": field, "message": str(exc)}]
    for prefix in forbidden:
        if path == prefix or path.startswith((prefix + ".", prefix + "[")):
            return None, [{"field": field, "message": f"The sweep sets {prefix} itself; it cannot be searched."}]
    if not isinstance(raw, dict):
        return None, [{"field": field, "message": "Must be an object with a type."}]
    kind = raw.get("type")
    if kind not in PARAM_TYPES:
        hint = did_you_mean(kind, PARAM_TYPES)
        return None, [{"field": f"{field}.type", "message": f"Must be one of: {', '.join(PARAM_TYPES)}.{hint}"}]
    allowed = ("type", "values") if kind in ("grid", "choice") else ("type", "low", "high")
    errors += [{"field": f"{field}.{key}", "message": unknown_field_message(key, allowed, field)}
               for key in raw if key not in allowed]
    if kind in ("grid", "choice"):
        values = raw.get("values")
        if not isinstance(values, list) or not 1 <= len(values) <= MAX_VALUES:
            errors.append({"field": f"{field}.values", "message": f"Must be a list of 1 to {MAX_VALUES} values."})
        else:
            seen: dict[str, int] = {}
            for i, value in enumerate(values):
                key = json.dumps(value, sort_keys=True)
                if key in seen:
                    errors.append({"field": f"{field}.values[{i}]",
                                   "message": f"Repeats values[{seen[key]}]; each value may appear once."})
                seen.setdefault(key, i)
        return (None if errors else Param(path, steps, kind, values=tuple(values))), errors
    low, high = raw.get("low"), raw.get("high")
    for key, value in (("low", low), ("high", high)):
        if kind == "int_uniform" and not (isinstance(value, int) and not isinstance(value, bool)
                                          and -MAX_INT <= value <= MAX_INT):
            errors.append({"field": f"{field}.{key}", "message": "Must be a whole number from -2^53 to 2^53."})
        elif not _is_number(value):
            errors.append({"field": f"{field}.{key}", "message": "Must be a finite number."})
    if not errors:
        if kind == "log_uniform" and low <= 0:
            errors.append({"field": f"{field}.low", "message": "Must be greater than 0 for log_uniform."})
        elif low >= high:
            errors.append({"field": f"{field}.high", "message": f"Must be greater than low ({low})."})
    return (None if errors else Param(path, steps, kind, low=low, high=high)), errors


def overlaps(params: list[Param]) -> Errors:
    """A field searched twice, or inside another searched field, would be set twice per trial."""
    errors: Errors = []
    for a, b in itertools.combinations(params, 2):
        short, long_ = (a, b) if len(a.steps) <= len(b.steps) else (b, a)
        if long_.steps[: len(short.steps)] == short.steps:
            errors.append({"field": f"search.{long_.path}",
                           "message": f"Overlaps search.{short.path}; each field may be searched once."})
    return errors


def grid_size(params: list[Param]) -> int:
    return math.prod(len(p.values) for p in params if p.type == "grid")


def has_random(params: list[Param]) -> bool:
    return any(p.type != "grid" for p in params)


def grid_plan(params: list[Param]) -> list[dict[str, Any]]:
    """Every combination of the grid parameters, `{path: value}`, in the search's order (the last varies
    fastest). Used to check a grid sweep's trials up front; Optuna's GridSampler picks their order."""
    grid = [p for p in params if p.type == "grid"]
    return [dict(zip((p.path for p in grid), combo)) for combo in itertools.product(*(p.values for p in grid))]


def apply(base: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """`base` with each `{path: value}` set; `base` and the values are left as they are.

    What the values do not touch is shared with `base`, and the values are shared with the result: a
    sweep builds hundreds of trial specs from one base, and validation, which never mutates its input,
    checks each shared object once (`trainyard.spec.fields.reusing_loads`). Deep-copy the result before
    changing it in place.
    """
    spec: Any = base
    for path, value in values.items():
        steps = parse_path(path)
        get_at(spec, steps)  # PathError when it names no field
        spec = _with(spec, steps, value)
    return spec
