"""marshmallow building blocks shared by the spec schemas.

marshmallow coerces by default ("5" -> 5, "yes" -> True, true -> 1); a job spec is JSON written by a
client, and silently accepting a string where a number belongs hides client bugs, so these fields take
only the JSON type they name.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate

MUST_BE_OBJECT = "Must be an object."


class SpecSchema(Schema):
    """Base for every object in the spec: unknown keys are errors, messages say what was expected."""

    class Meta:
        unknown = RAISE

    error_messages = {"type": MUST_BE_OBJECT, "unknown": "Unknown field."}


class Int(fields.Integer):
    default_error_messages = {"invalid": "Must be an integer."}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        # bool is an int subclass in Python but `true` is not a number in JSON.
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer() and math.isfinite(value):
                return int(value)  # 10.0 from a JSON encoder that writes every number as float
            raise self.make_error("invalid")
        return value


class Float(fields.Float):
    default_error_messages = {"invalid": "Must be a number."}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


class Bool(fields.Boolean):
    default_error_messages = {"invalid": "Must be true or false."}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


class Str(fields.String):
    default_error_messages = {"invalid": "Must be a string."}


class Choice(Str):
    """A string from an allow-list, with optional aliases normalised to their canonical name."""

    def __init__(
        self,
        choices: list[str],
        *,
        aliases: Mapping[str, str] | None = None,
        none_as: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.aliases = dict(aliases or {})
        # `none_as` lets `"activation": null` mean what it means in Keras ("linear") while the
        # normalised spec always holds a name.
        self.none_as = none_as
        if none_as is not None:
            kwargs.setdefault("allow_none", True)
        allowed = list(choices) + [a for a in self.aliases if a not in choices]
        super().__init__(validate=validate.OneOf(allowed), **kwargs)

    def deserialize(self, value: Any, attr: str | None = None, data: Any = None, **kwargs: Any) -> Any:
        if value is None and self.none_as is not None:
            return self.none_as
        return super().deserialize(value, attr, data, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        value = super()._deserialize(value, attr, data, **kwargs)
        return self.aliases.get(value, value)


class Tagged(fields.Field):
    """An object whose `type` key picks its schema (layers, optimizers, schedules).

    Errors from the chosen schema are raised as a nested dict so they keep their field paths.
    """

    default_error_messages = {"type": MUST_BE_OBJECT}

    def __init__(self, schemas: Mapping[str, type[Schema]], **kwargs: Any) -> None:
        self.schemas = dict(schemas)
        # One instance per type, made on first use: building a schema deep-copies its fields, which
        # cost more than loading a layer. Loading keeps no state on the instance, so it is reused.
        self._instances: dict[str, Schema] = {}
        super().__init__(**kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dict:
        if not isinstance(value, dict):
            raise self.make_error("type")
        kind = value.get("type")
        if kind is None:
            raise ValidationError({"type": ["Missing data for required field."]})
        if not isinstance(kind, str) or kind not in self.schemas:
            raise ValidationError({"type": [f"Must be one of: {', '.join(self.schemas)}."]})
        schema = self._instances.get(kind)
        if schema is None:
            schema = self._instances[kind] = self.schemas[kind]()
        loaded = schema.load(value)
        # `type` first, whatever the schema's inheritance order, so stored specs read naturally.
        return {"type": kind, **{k: v for k, v in loaded.items() if k != "type"}}


def type_field(name: str) -> Str:
    """The `type` discriminator of a tagged object (already checked by `Tagged`)."""
    return Str(required=True, validate=validate.Equal(name))


class IntOrList(fields.Field):
    """`3` or `[3, 3]`, normalised to a list of `rank` ints in [low, high] (Keras' kernel_size etc.)."""

    def __init__(self, rank: int, low: int, high: int, **kwargs: Any) -> None:
        self.rank, self.low, self.high = rank, low, high
        super().__init__(**kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[int]:
        want = f"an integer or a list of {self.rank} integer{'s' if self.rank > 1 else ''}"
        if isinstance(value, list):
            if len(value) != self.rank:
                raise ValidationError(f"Must be {want}.")
            items = value
        else:
            items = [value] * self.rank
        for item in items:
            if isinstance(item, bool) or not isinstance(item, int):
                raise ValidationError(f"Must be {want}.")
            if not self.low <= item <= self.high:
                raise ValidationError(
                    f"Must be {want} between {self.low} and {self.high}; got {value}."
                )
        return list(items)
