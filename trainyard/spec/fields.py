"""marshmallow building blocks shared by the spec schemas.

marshmallow coerces by default ("5" -> 5, "yes" -> True, true -> 1); a job spec is JSON written by a
client, and silently accepting a string where a number belongs hides client bugs, so these fields take
only the JSON type they name.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, validate

MUST_BE_OBJECT = "Must be an object."
#: The largest float32: the engine casts every float of a spec to float32, and TensorFlow refuses a
#: Python float beyond it ("value out of range") where it converts one, e.g. early stopping's min_delta.
FLOAT32_MAX = 3.4028234663852886e38
#: Unknown keys of one object named in an answer; a body with thousands of them is refused as cheaply.
MAX_UNKNOWN_REPORTED = 10


class SpecSchema(Schema):
    """Base for every object in the spec: unknown keys are errors, messages say what was expected."""

    class Meta:
        unknown = RAISE

    error_messages = {"type": MUST_BE_OBJECT, "unknown": "Unknown field."}


def refuse_many_unknown_keys(data: Any, schema: Schema) -> None:
    """Refuse an object with more than a handful of unknown keys before any of its fields is loaded.

    marshmallow files one error per unknown key, and a 1 MiB object holds ~100,000 of them; beyond a
    handful the answer names the first few and counts the rest. Called where an object meets its schema
    (`Object`, `Tagged`, `validate_spec`) rather than as a pre_load hook, which would cost every load.
    """
    if not isinstance(data, dict) or len(data) <= len(schema.load_fields) + MAX_UNKNOWN_REPORTED:
        return
    unknown = [key for key in data if key not in schema.load_fields]
    if len(unknown) <= MAX_UNKNOWN_REPORTED:
        return
    messages: dict[str, list[str]] = {str(key): ["Unknown field."] for key in unknown[:MAX_UNKNOWN_REPORTED]}
    messages["_schema"] = [f"{len(unknown) - MAX_UNKNOWN_REPORTED} more unknown fields are not listed."]
    raise ValidationError(messages)


class Object(fields.Nested):
    """A nested object of the spec (marshmallow's Nested, refusing a flood of unknown keys cheaply)."""

    def _load(self, value: Any, partial: Any = None) -> Any:
        refuse_many_unknown_keys(value, self.schema)
        return super()._load(value, partial=partial)


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
    """A finite JSON number within float32's range (integers are taken and stored as floats)."""

    default_error_messages = {
        "invalid": "Must be a number.",
        "float32": f"Must be a finite number between -{FLOAT32_MAX:.7g} and {FLOAT32_MAX:.7g}.",
    }

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.make_error("invalid")
        # Compared before float(): float() of a huge JSON integer raises OverflowError, not ValueError.
        if not -FLOAT32_MAX <= value <= FLOAT32_MAX:  # NaN compares False too
            raise self.make_error("float32")
        return super()._deserialize(value, attr, data, **kwargs)


class FloatOrWord(Float):
    """A number as `Float` takes it, or one of a few words that stand for a value the engine works out
    (`optimizer.learning_rate: "auto"`); the number's validators do not apply to a word."""

    def __init__(self, words: tuple[str, ...], **kwargs: Any) -> None:
        self.words = tuple(words)
        super().__init__(**kwargs)
        quoted = " or ".join(f'"{w}"' for w in self.words)
        self.error_messages = {**self.error_messages, "invalid": f"Must be a number or {quoted}."}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> float | str:
        if isinstance(value, str) and value in self.words:
            return value
        return super()._deserialize(value, attr, data, **kwargs)

    def _validate(self, value: Any) -> None:
        if isinstance(value, str) and value in self.words:
            return
        super()._validate(value)


class Bool(fields.Boolean):
    default_error_messages = {"invalid": "Must be true or false."}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> bool:
        if not isinstance(value, bool):
            raise self.make_error("invalid")
        return value


class Str(fields.String):
    default_error_messages = {"invalid": "Must be a string."}


class List(fields.List):
    """A JSON array of at most `max_length` items, refused by its length before any item is looked at.

    marshmallow checks a list's length only after it has deserialised (and filed an error for) every
    item; a 1 MiB body holds ~200,000 of them.
    """

    def __init__(self, inner: fields.Field, *, max_length: int, min_length: int = 0, **kwargs: Any) -> None:
        self.min_length, self.max_length = min_length, max_length
        super().__init__(inner, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[Any]:
        if isinstance(value, list) and not self.min_length <= len(value) <= self.max_length:
            if len(value) < self.min_length:
                raise ValidationError(f"Must hold at least {self.min_length} item{'s' if self.min_length > 1 else ''}.")
            raise ValidationError(f"Must hold at most {self.max_length} items; got {len(value)}.")
        return super()._deserialize(value, attr, data, **kwargs)


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
        self.allowed = list(choices) + [a for a in self.aliases if a not in choices]
        super().__init__(validate=validate.OneOf(self.allowed), **kwargs)

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
        self._family = tuple(self.schemas)
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
        reused = _REUSED.get()
        content = None
        if reused is not None:
            if (hit := reused.get((self._family, id(value)))) is not None and hit[0] is value:
                return hit[1]
            # An equal object loads to an equal result: trials that set one layer to the same value share it.
            content = _canonical(value)
            if content is not None and (hit := reused.get((self._family, content))) is not None:
                return hit[1]
        schema = self._instances.get(kind)
        if schema is None:
            schema = self._instances[kind] = self.schemas[kind]()
        refuse_many_unknown_keys(value, schema)
        loaded = schema.load(value)
        # `type` first, whatever the schema's inheritance order, so stored specs read naturally.
        result = {"type": kind, **{k: v for k, v in loaded.items() if k != "type"}}
        if reused is not None:
            # The entries keep both objects alive, so their ids cannot be reused by others meanwhile.
            reused[(self._family, id(value))] = (value, result)
            reused[(self._family, id(result))] = (result, result)  # normalising is idempotent
            if content is not None:
                reused[(self._family, content)] = (value, result)
        return result


def _canonical(value: dict) -> str | None:
    try:
        return json.dumps(value, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError):  # not plain JSON (a caller's Python objects): loaded as usual
        return None


# Tagged objects (layers, optimizers, schedules) loaded in the current `reusing_loads()` block, by the
# field's types and the id, or the canonical JSON, of what was loaded: {(types, key): (obj, loaded)}.
_REUSED: ContextVar[dict[tuple[tuple[str, ...], int | str], tuple[Any, dict]] | None] = ContextVar(
    "spec_reused_loads", default=None
)


@contextmanager
def reusing_loads() -> Iterator[None]:
    """Within the block, a tagged object that was loaded before (the same object, or an equal one) is not
    loaded again.

    A sweep validates hundreds of specs that share all but a few of their objects (trainyard/sweeps/):
    each distinct layer is checked once instead of once per trial, which keeps a sweep's validation
    linear in its body. Callers must not mutate the specs validated inside the block, since their
    layers, optimizer and schedule may be the same objects; validation itself never mutates them.
    """
    token = _REUSED.set({})
    try:
        yield
    finally:
        _REUSED.reset(token)


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
