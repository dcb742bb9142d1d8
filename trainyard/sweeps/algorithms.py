"""The `algorithm` and `early_stopping` objects of a sweep: marshmallow schemas, one per `type`.

Each names an Optuna sampler or pruner (trainyard/sweeps/study.py builds them); the fields are their
parameters with Optuna's defaults filled in, so what is stored and shown is exactly what runs. Errors carry
field paths (`algorithm.n_startup_trials`, `early_stopping.reduction_factor`). Imports only marshmallow.
"""
from __future__ import annotations

from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate

from trainyard.spec.errors import flatten_messages

Errors = list[dict[str, str]]
SEED_MAX = 2**31 - 1


def _int(low: int, high: int, default: Any) -> fields.Integer:
    return fields.Integer(strict=True, load_default=default,
                          validate=validate.Range(low, high, error="Must be a whole number from {min} to {max}."))


class _Typed(Schema):
    class Meta:
        unknown = RAISE

    type = fields.String(required=True)


class GridSchema(_Typed):
    seed = _int(0, SEED_MAX, None)


class RandomSchema(GridSchema):
    pass


class TpeSchema(GridSchema):
    n_startup_trials = _int(0, 10_000, 10)
    multivariate = fields.Boolean(load_default=False)


class CmaEsSchema(GridSchema):
    n_startup_trials = _int(0, 10_000, 1)


class QmcSchema(GridSchema):
    qmc_type = fields.String(validate=validate.OneOf(("sobol", "halton")), load_default="sobol")
    scramble = fields.Boolean(load_default=True)


class Nsga2Schema(GridSchema):
    population_size = _int(2, 10_000, 50)


ALGORITHMS: dict[str, type[Schema]] = {"grid": GridSchema, "random": RandomSchema, "tpe": TpeSchema,
                                       "cmaes": CmaEsSchema, "qmc": QmcSchema, "nsga2": Nsga2Schema}
#: Algorithms that handle two or three objectives.
MULTI_OBJECTIVE = ("nsga2", "random", "tpe", "qmc", "grid")


class MedianSchema(_Typed):
    grace_epochs = _int(0, 100_000, 1)
    min_trials = _int(1, 10_000, 2)


class AshaSchema(_Typed):
    min_resource = _int(1, 100_000, 1)
    reduction_factor = _int(2, 100, 3)
    min_early_stopping_rate = _int(0, 100, 0)
    bootstrap_count = _int(0, 10_000, 0)


class HyperbandSchema(_Typed):
    min_resource = _int(1, 100_000, 1)
    # Left out: the base spec's training.epochs, the most epochs a trial runs.
    max_resource = _int(1, 100_000, None)
    reduction_factor = _int(2, 100, 3)
    bootstrap_count = _int(0, 10_000, 0)


class NoneSchema(_Typed):
    pass


EARLY_STOPPING: dict[str, type[Schema]] = {"median": MedianSchema, "asha": AshaSchema,
                                           "hyperband": HyperbandSchema, "none": NoneSchema}


def load_typed(raw: Any, schemas: dict[str, type[Schema]], field: str, errors: Errors) -> dict[str, Any] | None:
    """`raw` loaded by the schema its `type` names; None (and errors under `field`) when it is invalid."""
    if not isinstance(raw, dict):
        errors.append({"field": field, "message": f"Must be an object with a type ({', '.join(schemas)})."})
        return None
    kind = raw.get("type")
    if kind not in schemas:
        errors.append({"field": f"{field}.type", "message": f"Must be one of: {', '.join(schemas)}."})
        return None
    try:
        return schemas[kind]().load(raw)
    except ValidationError as exc:
        errors += flatten_messages(exc.messages, field)
        return None
