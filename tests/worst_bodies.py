"""The most expensive JSON bodies we know of for POST /v1/jobs and POST /v1/sweeps, each just under 1 MiB.

Each was found by experiment against the earlier validator (figures in bench/spec_cost.py's docstring and
the commits that bounded them): a list whose duplicates were counted pairwise, lists of 200,000 items
each filing its own error, objects of 100,000 unknown keys, nesting a few hundred levels deep, numbers of
thousands of digits, and sweeps whose every value and trial re-validated a 64-layer base.
`tests/service/test_body_cost.py` posts them to the API; `bench/spec_cost.py` times their validation.
"""
from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MAX_BODY = 1024 * 1024
DENSE = {"type": "dense", "units": 4, "activation": "relu", "use_bias": True, "kernel_initializer": "he_normal",
         "bias_initializer": "zeros", "kernel_regularizer": {"l1": 0.0, "l2": 0.001},
         "bias_regularizer": {"l1": 0.0, "l2": 0.001}}
HEAD = {"type": "dense", "units": 3, "activation": "softmax"}


def iris(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "dataset": {"id": "builtin:iris"},
        "model": {"input_shape": [4], "layers": [HEAD]},
        "loss": "sparse_categorical_crossentropy",
        "training": {"epochs": 2, "batch_size": 16},
    }
    spec.update(copy.deepcopy(overrides))
    return spec


def biggest_spec() -> dict[str, Any]:
    """The largest valid spec: 64 fully written layers, every metric iris allows, every callback."""
    return iris(
        name="x" * 128,
        model={"input_shape": [4], "layers": [DENSE] * 63 + [HEAD]},
        metrics=["accuracy", "sparse_categorical_accuracy"],
        callbacks={"early_stopping": {"patience": 3, "min_delta": 0.001, "restore_best_weights": True},
                   "reduce_lr_on_plateau": {"patience": 2, "factor": 0.5}},
    )


def fill(make: Callable[[int], Any], per_item: int) -> Any:
    """make(n) with the largest n whose JSON stays under MAX_BODY (a few probes from an estimate)."""
    n = max(1, (MAX_BODY - 2048) // per_item)
    while len(json.dumps(make(n))) > MAX_BODY:
        n = int(n * 0.97)
    return make(n)


def with_nested(key: str, depth: int) -> str:
    """iris() with `key` set to a list nested `depth` deep, as JSON text (deepcopy and json.dumps recurse)."""
    return json.dumps(iris())[:-1] + f', "{key}": ' + "[" * depth + "1" + "]" * depth + "}"


def _sweep(base: dict[str, Any], search: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": "worst", "base": base, "search": search, "objective": {"metric": "val_loss"}, **extra}


@dataclass(frozen=True)
class Body:
    name: str
    path: str  # /v1/jobs or /v1/sweeps
    make: Callable[[], Any]
    status: int  # what the API answers
    field: str | None = None  # the first error's field, for 422


BODIES: list[Body] = [
    Body("repeated metric", "/v1/jobs", lambda: fill(lambda n: iris(metrics=["accuracy"] * n), 12), 422, "metrics"),
    Body("unknown metrics", "/v1/jobs", lambda: fill(lambda n: iris(metrics=["x"] * n), 5), 422, "metrics"),
    Body("long input_shape", "/v1/jobs",
         lambda: fill(lambda n: iris(model={"input_shape": [1] * n, "layers": [HEAD]}), 3), 422, "model.input_shape"),
    Body("long reshape target", "/v1/jobs",
         lambda: fill(lambda n: iris(model={"input_shape": [4], "layers": [
             {"type": "reshape", "target_shape": [1] * n}, HEAD]}), 3), 422, "model.layers[0].target_shape"),
    Body("many boundaries", "/v1/jobs",
         lambda: fill(lambda n: iris(schedule={"type": "piecewise_constant", "boundaries": list(range(1, n + 1)),
                                               "values": [0.01] * (n + 1)}), 16), 422, "schedule.boundaries"),
    Body("many layers", "/v1/jobs",
         lambda: fill(lambda n: iris(model={"input_shape": [4], "layers": [DENSE] * n + [HEAD]}), 230), 422,
         "model.layers"),
    Body("unknown keys at the top", "/v1/jobs",
         lambda: fill(lambda n: {**iris(), **{f"k{i}": 0 for i in range(n)}}, 12), 422),
    Body("unknown keys in a layer", "/v1/jobs",
         lambda: fill(lambda n: iris(model={"input_shape": [4], "layers": [
             {**HEAD, **{f"k{i}": 0 for i in range(n)}}]}), 12), 422),
    Body("64 layers, every field wrong", "/v1/jobs",
         lambda: iris(model={"input_shape": [4], "layers": [
             {"type": "dense", "units": 0, "activation": "nope", "use_bias": 3, "kernel_initializer": "x",
              "bias_initializer": "y", "kernel_regularizer": {"l1": -1, "l2": -1},
              "bias_regularizer": {"l1": -1, "l2": -1}}] * 64}), 422),
    Body("deep nesting in an unknown field", "/v1/jobs", lambda: with_nested("deep", 900), 422, "deep"),
    Body("deep nesting in a field", "/v1/jobs", lambda: with_nested("metrics", 900), 422, "metrics[0]"),
    Body("nesting past the parser", "/v1/jobs", lambda: with_nested("deep", 100_000), 400),
    Body("long name", "/v1/jobs", lambda: iris(name="a" * (MAX_BODY - 1024)), 422, "name"),
    Body("long activation", "/v1/jobs", lambda: iris(model={"input_shape": [4], "layers": [
        {**HEAD, "activation": "a" * (MAX_BODY - 1024)}]}), 422, "model.layers[0].activation"),
    Body("a number of 500,000 digits", "/v1/jobs", lambda: '{"training": {"epochs": ' + "9" * 500_000 + "}}", 400),
    Body("the biggest valid spec", "/v1/jobs", biggest_spec, 201),
    # Sweeps: the base is the biggest valid spec unless said otherwise.
    Body("20 x 100 values", "/v1/sweeps", lambda: _sweep(biggest_spec(), {
        f"model.layers[{i}].units": {"type": "choice", "values": list(range(1, 101))} for i in range(20)},
        max_trials=200), 422, "search"),
    Body("a grid of 100^20", "/v1/sweeps", lambda: _sweep(biggest_spec(), {
        f"model.layers[{i}].units": {"type": "grid", "values": list(range(1, 101))} for i in range(20)}), 422),
    Body("20 x 10 values, 200 trials", "/v1/sweeps", lambda: _sweep(biggest_spec(), {
        f"model.layers[{i}].units": {"type": "choice", "values": list(range(1, 11))} for i in range(20)},
        max_trials=200), 201),
    Body("20 random fields, 200 trials", "/v1/sweeps", lambda: _sweep(biggest_spec(), {
        f"model.layers[{i}].kernel_regularizer.l2": {"type": "uniform", "low": 0.0, "high": 0.5}
        for i in range(20)}, max_trials=200), 201),
    Body("whole models as values", "/v1/sweeps", lambda: fill(lambda n: _sweep(biggest_spec(), {
        "model.layers": {"type": "choice", "values": [[dict(DENSE, units=u)] * 63 + [HEAD]
                                                      for u in range(1, min(n, 100) + 1)]}},
        max_trials=200), 15_000), 201),
    Body("unknown keys in a sweep", "/v1/sweeps",
         lambda: fill(lambda n: {**_sweep(iris(), {}), **{f"k{i}": 0 for i in range(n)}}, 12), 422),
    Body("a long search path", "/v1/sweeps", lambda: _sweep(iris(), {
        "a" * (MAX_BODY - 2048): {"type": "choice", "values": [1]}}, max_trials=1), 422, "search"),
]


def encode(body: Body) -> bytes:
    value = body.make()
    data = value.encode() if isinstance(value, str) else json.dumps(value).encode()
    assert len(data) <= MAX_BODY, (body.name, len(data))
    return data
