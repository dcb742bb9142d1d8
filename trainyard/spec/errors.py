"""The one exception `validate_spec` raises, and the conversion of marshmallow's nested messages to it.

Clients get a flat list of `{"field": "model.layers[2].units", "message": "..."}`: a path a person can
read and a client can map back onto its own form, whatever nesting produced the error.
"""
from __future__ import annotations

from typing import Any

#: The field path of the job spec itself (the whole body), e.g. when the body is not an object.
ROOT = ""

#: marshmallow files schema-level errors under this key; they belong to the object holding them.
_SCHEMA_KEY = "_schema"


#: Errors one answer lists; a last entry counts the rest. Every list in a spec is capped (bounds.py), so
#: finding them is cheap; this keeps the answer small too.
MAX_ERRORS = 50


def truncate_errors(errors: list[dict[str, str]]) -> list[dict[str, str]]:
    if len(errors) <= MAX_ERRORS:
        return errors
    return errors[:MAX_ERRORS] + [error(ROOT, f"{len(errors) - MAX_ERRORS} more errors are not listed.")]


class SpecError(Exception):
    """The job spec is invalid; `errors` lists the problems found (at most MAX_ERRORS and a count of the
    rest), each with its field path."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        errors = truncate_errors(errors)
        self.errors = errors
        summary = "; ".join(f"{e['field'] or '(spec)'}: {e['message']}" for e in errors[:3])
        if len(errors) > 3:
            summary += f"; and {len(errors) - 3} more"
        super().__init__(f"invalid job spec: {summary}")


def error(field: str, message: str) -> dict[str, str]:
    return {"field": field, "message": message}


def join_path(prefix: str, key: str | int) -> str:
    """`model` + `layers` -> `model.layers`; `model.layers` + 2 -> `model.layers[2]`."""
    if isinstance(key, int):
        return f"{prefix}[{key}]"
    if key == _SCHEMA_KEY:
        return prefix
    return f"{prefix}.{key}" if prefix else key


def flatten_messages(messages: Any, prefix: str = ROOT) -> list[dict[str, str]]:
    """Turn marshmallow's `{"model": {"layers": {2: {"units": ["..."]}}}}` into field-path errors."""
    if isinstance(messages, dict):
        out: list[dict[str, str]] = []
        for key, value in messages.items():
            out.extend(flatten_messages(value, join_path(prefix, key)))
        return out
    if isinstance(messages, (list, tuple)):
        out = []
        for item in messages:
            out.extend(flatten_messages(item, prefix))
        return out
    return [error(prefix, str(messages))]
