""""Did you mean ...?": the closest allowed name for an unknown field or value of a job spec.

marshmallow's messages say what is wrong ("Unknown field.", "Must be one of: ..."); a person who wrote
`"type": "Dense"`, a top-level `"epochs"` or `"optimizer": {"lr": ...}` also wants to know what to write
instead. `Hinter.flatten` flattens marshmallow's nested messages exactly as `flatten_messages` does
(same field paths, same order) while walking the raw body and the schema beside them, and appends the
closest allowed name to a message when there is one; a message with no close name is left as it is.

Bounded work: only names of at most MAX_HINT_CHARS are compared, and at most MAX_HINTS messages per
request get a hint (one `hint_budget()` covers a whole sweep, which validates many specs).
"""
from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from marshmallow import Schema, fields

from trainyard.spec.errors import ROOT, error, flatten_messages, join_path
from trainyard.spec.fields import MUST_BE_OBJECT, Choice, Object, Tagged

#: Longer names are not compared: difflib is quadratic in the length of what it compares.
MAX_HINT_CHARS = 64
#: Messages per request that are given a hint; later ones keep marshmallow's message alone.
MAX_HINTS = 20
#: A name that sits in more places than this is too ambiguous to suggest from a top-level key.
_MAX_PLACES = 3

UNKNOWN_FIELD = "Unknown field."

# Common spellings from Keras' older API, PyTorch and scikit-learn, by normalised name (see _norm) ->
# the field name this spec uses. Only suggested where the target is a field of the object (or, for a
# top-level key, of one of its sections).
FIELD_ALIASES: dict[str, str] = {
    "lr": "learning_rate", "learningrate": "learning_rate", "eps": "epsilon",
    "epoch": "epochs", "numepochs": "epochs", "nepochs": "epochs", "maxepochs": "epochs",
    "bs": "batch_size", "batch": "batch_size",
    "clipgradnorm": "clipnorm", "maxgradnorm": "clipnorm", "clipgradvalue": "clipvalue",
    "randomstate": "seed", "randomseed": "seed",
    "valsplit": "validation_split", "validationfraction": "validation_split",
    "outfeatures": "units", "outputsize": "units", "hiddensize": "units", "outputdim": "units",
    "outchannels": "filters", "kernel": "kernel_size", "stride": "strides",
    "p": "rate", "dropout": "rate", "dropoutrate": "rate",
    "criterion": "loss", "lossfn": "loss", "lossfunction": "loss", "optimiser": "optimizer",
    "earlystop": "early_stopping", "lrscheduler": "schedule", "scheduler": "schedule",
    # a sweep's search parameters
    "min": "low", "max": "high", "choices": "values", "options": "values",
}

# The same for values (layer types and the like, PyTorch's class names mostly).
VALUE_ALIASES: dict[str, str] = {
    "linear": "dense", "fc": "dense", "fullyconnected": "dense",
    "batchnorm": "batch_normalization", "batchnorm1d": "batch_normalization", "batchnorm2d": "batch_normalization",
    "layernorm": "layer_normalization",
    "maxpool1d": "max_pooling1d", "maxpool2d": "max_pooling2d", "avgpool2d": "average_pooling2d",
    "adaptiveavgpool1d": "global_average_pooling1d", "adaptiveavgpool2d": "global_average_pooling2d",
    "rnn": "simple_rnn", "view": "reshape",
    "mseloss": "mean_squared_error", "l1loss": "mean_absolute_error", "bceloss": "binary_crossentropy",
    "bcewithlogitsloss": "binary_crossentropy", "crossentropyloss": "sparse_categorical_crossentropy",
    "crossentropy": "categorical_crossentropy", "huberloss": "huber",
}

_BUDGET: ContextVar[list[int] | None] = ContextVar("spec_hint_budget", default=None)


@contextmanager
def hint_budget(hints: int = MAX_HINTS) -> Iterator[None]:
    """Within the block at most `hints` messages get a hint, however many specs are validated in it.

    Nested blocks share the outermost one's budget."""
    if _BUDGET.get() is not None:
        yield
        return
    token = _BUDGET.set([hints])
    try:
        yield
    finally:
        _BUDGET.reset(token)


def _spend() -> bool:
    budget = _BUDGET.get()
    if budget is None or budget[0] <= 0:
        return False
    budget[0] -= 1
    return True


def _norm(name: str) -> str:
    return name.lower().replace("_", "").replace("-", "").replace(" ", "")


def closest(name: Any, allowed: Iterable[str], aliases: Mapping[str, str] | None = None) -> str | None:
    """The allowed name `name` was most likely meant to be: the same up to case and `_`/`-`, then a
    known alias, then difflib's closest (None when nothing is close, or `name` is not a short string)."""
    if not isinstance(name, str) or not name or len(name) > MAX_HINT_CHARS:
        return None
    allowed = list(allowed)
    by_norm = {_norm(a): a for a in allowed}
    key = _norm(name)
    if key in by_norm:
        return by_norm[key]
    if aliases and aliases.get(key) in allowed:
        return aliases[key]
    by_lower = {a.lower(): a for a in allowed}
    match = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.6)
    return by_lower[match[0]] if match else None


def did_you_mean(name: Any, allowed: Iterable[str]) -> str:
    """" Did you mean "x"?" for the closest of `allowed` to the value `name`, within the budget; else ""."""
    hint = closest(name, allowed) if _spend() else None
    return f" Did you mean {json.dumps(hint)}?" if hint else ""


def unknown_field_message(key: str, allowed: Iterable[str], prefix: str = ROOT) -> str:
    """"Unknown field." with the closest of `allowed` (the object's fields at `prefix`), within the budget;
    for objects checked by hand rather than by a schema (the sweep's own fields)."""
    hint = closest(key, allowed, FIELD_ALIASES) if _spend() else None
    return f"{UNKNOWN_FIELD} Did you mean {join_path(prefix, hint)}?" if hint else UNKNOWN_FIELD


def _declared(schema: Any) -> dict[str, fields.Field]:
    # Declared fields are a class attribute: no schema instance (a deep copy of them) is needed.
    return schema._declared_fields


def _sections(field: fields.Field) -> list[dict[str, fields.Field]]:
    """The fields of the objects a field holds: an Object's one, a Tagged field's one per type."""
    if isinstance(field, Object):
        return [_declared(field.nested)]
    if isinstance(field, Tagged):
        return [{k: f for k, f in _declared(s).items() if k != "type"} for s in field.schemas.values()]
    return []


def nested_places(schema: type[Schema], depth: int = 2) -> dict[str, list[str]]:
    """Every field name inside the sections of `schema` (to `depth` levels) -> its full paths, e.g.
    `epochs` -> [`training.epochs`], `patience` -> [`callbacks.early_stopping.patience`, ...]."""
    places: dict[str, list[str]] = {}

    def walk(declared: dict[str, fields.Field], prefix: str, level: int) -> None:
        for name, field in declared.items():
            for inner in _sections(field):
                for sub in inner:
                    path = f"{prefix}{name}.{sub}"
                    if path not in places.setdefault(sub, []):
                        places[sub].append(path)
                if level < depth:
                    walk(inner, f"{prefix}{name}.", level + 1)

    walk(_declared(schema), "", 1)
    return places


def _or(paths: list[str]) -> str:
    return " or ".join(paths)


class Hinter:
    """Flattens marshmallow's messages for the schema `root` (or one of its nested schemas), with hints."""

    def __init__(self, root: type[Schema]) -> None:
        self.places = nested_places(root)

    def flatten(self, messages: Any, raw: Any, schema: Schema) -> list[dict[str, str]]:
        """`flatten_messages(messages)` with hints; `raw` is the body `schema` refused."""
        with hint_budget():  # joins the caller's budget when there is one
            return self._schema(messages, ROOT, raw, schema)

    # -- the walk: messages, raw value and schema side by side ---------------------------------------
    def _schema(self, messages: Any, path: str, raw: Any, schema: Schema) -> list[dict[str, str]]:
        if not isinstance(messages, dict):
            return flatten_messages(messages, path)
        out: list[dict[str, str]] = []
        declared = schema.load_fields
        for key, value in messages.items():
            here = join_path(path, key)
            field = declared.get(key) if isinstance(key, str) else None
            sub_raw = raw.get(key) if isinstance(raw, dict) and isinstance(key, str) else None
            if field is not None:
                out.extend(self._field(value, here, sub_raw, field))
            elif isinstance(key, str) and key != "_schema" and isinstance(raw, dict) and key in raw \
                    and _is_unknown(value):
                hint = self._unknown_field(key, path, declared) if _spend() else None
                out.append(error(here, f"{UNKNOWN_FIELD} Did you mean {hint}?" if hint else UNKNOWN_FIELD))
            else:
                out.extend(flatten_messages(value, here))
        return out

    def _field(self, messages: Any, path: str, raw: Any, field: fields.Field) -> list[dict[str, str]]:
        if isinstance(field, Object) and isinstance(messages, dict):
            return self._schema(messages, path, raw, field.schema)
        if isinstance(field, Tagged):
            return self._tagged(messages, path, raw, field)
        if isinstance(field, fields.List) and isinstance(messages, dict) and isinstance(raw, list):
            out: list[dict[str, str]] = []
            for index, value in messages.items():
                here = join_path(path, index)
                if isinstance(index, int) and 0 <= index < len(raw):
                    out.extend(self._field(value, here, raw[index], field.inner))
                else:
                    out.extend(flatten_messages(value, here))
            return out
        if isinstance(field, Choice) and _has_one_of(messages):
            hint = closest(raw, field.allowed, VALUE_ALIASES) if _spend() else None
            if hint:
                hint = field.aliases.get(hint, hint)
                return [error(path, f"Did you mean {json.dumps(hint)}? {m}") for m in _strings(messages)]
        return flatten_messages(messages, path)

    def _tagged(self, messages: Any, path: str, raw: Any, field: Tagged) -> list[dict[str, str]]:
        if _strings(messages) == [MUST_BE_OBJECT] and isinstance(raw, str):
            kind = closest(raw, field.schemas, VALUE_ALIASES) if _spend() else None
            if kind:
                return [error(path, f"{MUST_BE_OBJECT} Did you mean {json.dumps({'type': kind})}?")]
            return flatten_messages(messages, path)
        if not isinstance(messages, dict) or not isinstance(raw, dict):
            return flatten_messages(messages, path)
        kind = raw.get("type")
        if isinstance(kind, str) and kind in field.schemas:
            schema = field._instances.get(kind) or field.schemas[kind]()
            return self._schema(messages, path, raw, schema)
        out: list[dict[str, str]] = []
        for key, value in messages.items():
            here = join_path(path, key)
            hint = closest(kind, field.schemas, VALUE_ALIASES) if key == "type" and _has_one_of(value) \
                and _spend() else None
            if hint:
                out.extend(error(here, f"Did you mean {json.dumps(hint)}? {m}") for m in _strings(value))
            else:
                out.extend(flatten_messages(value, here))
        return out

    def _unknown_field(self, key: str, path: str, declared: Mapping[str, fields.Field]) -> str | None:
        """The full path (or paths) the unknown `key` of the object at `path` was most likely meant as."""
        if len(key) > MAX_HINT_CHARS:
            return None
        local = [name for name in declared if name != "type"]
        norm = _norm(key)
        aliased = FIELD_ALIASES.get(norm)
        # The same name up to case, or a known alias of one, in this object.
        for name in local:
            if _norm(name) == norm or name == aliased:
                return join_path(path, name)
        # A field of one of the spec's sections (a top-level `epochs`, or `learning_rate` in `training`).
        for name in (key, aliased):
            paths = [p for p in self.places.get(name or "", []) if p.rsplit(".", 1)[0] != path]
            if 0 < len(paths) <= _MAX_PLACES:
                return _or(paths)
        near = closest(key, local)
        if near:
            return join_path(path, near)
        if path == ROOT:  # `epoch`, `batchsize` at the top: close to a section's field
            near = closest(key, self.places)
            if near and len(self.places[near]) <= _MAX_PLACES:
                return _or(self.places[near])
        return None


def _strings(messages: Any) -> list[str]:
    if isinstance(messages, str):
        return [messages]
    if isinstance(messages, (list, tuple)) and all(isinstance(m, str) for m in messages):
        return list(messages)
    return []


def _has_one_of(messages: Any) -> bool:
    strings = _strings(messages)
    return bool(strings) and all(m.startswith("Must be one of:") for m in strings)


def _is_unknown(messages: Any) -> bool:
    return _strings(messages) == [UNKNOWN_FIELD]
