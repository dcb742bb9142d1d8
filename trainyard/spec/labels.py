"""Labels: a job's flat map of short strings to group and find it by (`GET /v1/jobs?label=team:vision`).

Set in the spec at submission and changed later with `PATCH /v1/jobs/{id}`. Keys follow Kubernetes' label
names, lower-case and starting with a letter (`team`, `data.version`, `ab-test_2`), so `key:value` in a query
splits at the first colon, and a key never reads as a path or a number. Values are any text without control characters. Both are capped,
as is the number of labels: every map in a spec has a cap (README, Security model).
"""
from __future__ import annotations

import re
import unicodedata
from typing import Any

from marshmallow import ValidationError, fields

from trainyard.spec.fields import MUST_BE_OBJECT

MAX_LABELS = 32
MAX_KEY_CHARS = 63
MAX_VALUE_CHARS = 256
KEY_PATTERN = r"[a-z]([a-z0-9_.-]*[a-z0-9])?"
KEY_RE = re.compile(KEY_PATTERN, re.ASCII)
KEY_RULE = (f"Must be 1 to {MAX_KEY_CHARS} lower-case letters, digits and . _ -, starting with a letter and "
            "ending with a letter or digit.")
#: A refused key longer than this is shortened in the error's field path.
_PATH_KEY_CHARS = 80


def key_error(key: str) -> str | None:
    """Why `key` cannot be a label key, or None."""
    if len(key) > MAX_KEY_CHARS or not KEY_RE.fullmatch(key):
        return KEY_RULE
    return None


def value_error(value: Any) -> str | None:
    """Why `value` cannot be a label value, or None."""
    if not isinstance(value, str):
        return "Must be a string."
    if len(value) > MAX_VALUE_CHARS:
        return f"Must be at most {MAX_VALUE_CHARS} characters; got {len(value)}."
    if any(unicodedata.category(c) == "Cc" for c in value):
        return "Must not hold control characters (line breaks, tabs, NUL...)."
    return None


def _path_key(key: str) -> str:
    return key if len(key) <= _PATH_KEY_CHARS else key[:_PATH_KEY_CHARS] + "..."


class Labels(fields.Field):
    """A JSON object of label keys to string values (or, with `deletable`, to null: a merge patch's "remove
    this key"), refused by its size before any entry is looked at. Errors name `labels.<key>`."""

    default_error_messages = {"type": MUST_BE_OBJECT}

    def __init__(self, *, deletable: bool = False, **kwargs: Any) -> None:
        self.deletable = deletable
        super().__init__(**kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dict[str, str | None]:
        if not isinstance(value, dict):
            raise self.make_error("type")
        if len(value) > MAX_LABELS:
            raise ValidationError(f"At most {MAX_LABELS} labels are allowed; got {len(value)}.")
        errors: dict[str, list[str]] = {}
        for key, item in value.items():
            problem = key_error(key)
            if problem is None and not (item is None and self.deletable):
                problem = value_error(item)
            if problem is not None:
                errors[_path_key(key)] = [problem]
        if errors:
            raise ValidationError(errors)
        return dict(value)


def merge(current: dict[str, str], patch: dict[str, str | None]) -> dict[str, str]:
    """`current` with a JSON merge patch (RFC 7396) of label changes applied: a null removes its key."""
    merged = {**current, **patch}
    return {key: value for key, value in merged.items() if value is not None}
