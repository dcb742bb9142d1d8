"""The one exception type for problems with user-supplied training data."""
from __future__ import annotations

import logging
from typing import NoReturn

logger = logging.getLogger(__name__)


class DatasetError(Exception):
    """A data set a user supplied (or named) cannot be used.

    `errors` is a list of `{"field": ..., "message": ...}` in the same shape as `SpecError.errors`, so the
    API can map both to one problem+json body. `field` names what is wrong: "file" for the upload as a
    whole, "file:x_train" for one array of an `.npz`, "target" for the CSV target column, "name" for a
    built-in data set. Every message is a sentence the user can act on.
    """

    def __init__(self, errors: list[dict[str, str]], detail: str | None = None) -> None:
        if not errors:
            raise ValueError("DatasetError needs at least one error")
        self.errors: list[dict[str, str]] = [dict(e) for e in errors]
        self.detail: str = detail or " ".join(e["message"] for e in self.errors)
        super().__init__(self.detail)

    @classmethod
    def single(cls, field: str, message: str) -> "DatasetError":
        return cls([{"field": field, "message": message}])


def fail(field: str, message: str) -> NoReturn:
    """Raise a one-error `DatasetError`; keeps the many validation branches to one line each."""
    raise DatasetError.single(field, message)
