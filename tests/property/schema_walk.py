"""Every field the job-spec schema declares, found by walking the schema itself.

The property test draws its values from here, and tests/spec/test_bounds.py checks that each number is
bounded on both sides: a field added to the schema is covered without anyone copying it into a test.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from marshmallow import Schema, fields, validate

from trainyard.spec.fields import Float, Int, IntOrList, List, Object, Tagged
from trainyard.spec.labels import Labels
from trainyard.spec.schema import JobSpecSchema


@dataclass(frozen=True)
class Field:
    path: str  # e.g. "optimizer<adam>.beta_1", "model.layers[]<dense>.kernel_regularizer.l1"
    field: fields.Field


def walk(schema: Schema | None = None, prefix: str = "") -> Iterator[Field]:
    """Every field of `schema` (the whole job spec by default), nested objects and tagged types included."""
    schema = schema if schema is not None else JobSpecSchema()
    for name, field in schema.fields.items():
        path = f"{prefix}{name}"
        yield Field(path, field)
        yield from _inside(field, path)


def _inside(field: fields.Field, path: str) -> Iterator[Field]:
    if isinstance(field, Object):
        yield from walk(field.schema, path + ".")
    elif isinstance(field, Tagged):
        for kind, schema_class in field.schemas.items():
            yield from walk(schema_class(), f"{path}<{kind}>.")
    elif isinstance(field, fields.List):
        yield Field(path + "[]", field.inner)
        yield from _inside(field.inner, path + "[]")


def range_of(field: fields.Field) -> validate.Range | None:
    for validator in field.validators:
        if isinstance(validator, validate.Range):
            return validator
    return None


def is_number(field: fields.Field) -> bool:
    return isinstance(field, (Float, Int, IntOrList))


#: Numbers whose upper bound is an operator setting (SpecLimits), checked in checks.py.
BOUNDED_BY_SETTINGS = ("training.epochs", "training.batch_size", "limits.max_runtime_seconds")


def unbounded_numbers() -> list[str]:
    """Paths of numeric fields without a finite minimum and maximum of their own (or from SpecLimits)."""
    found = []
    for item in walk():
        field = item.field
        if not is_number(field) or item.path.endswith("version"):
            continue
        if isinstance(field, IntOrList):
            if field.low is None or field.high is None:
                found.append(item.path)
            continue
        bound = range_of(field)
        has_min = bound is not None and bound.min is not None
        has_max = bound is not None and bound.max is not None
        if not has_min or not (has_max or item.path in BOUNDED_BY_SETTINGS):
            found.append(item.path)
    return found


def unbounded_lists() -> list[str]:
    return [item.path for item in walk() if isinstance(item.field, fields.List)
            and not (isinstance(item.field, List) or item.path == "model.layers")]


def unbounded_maps() -> list[str]:
    """Paths of fields holding objects with keys of the client's choosing, other than `Labels` (capped)."""
    return [item.path for item in walk() if isinstance(item.field, fields.Mapping) and not isinstance(item.field, Labels)]
