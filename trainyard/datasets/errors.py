"""The one exception type for problems with user-supplied training data."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import BinaryIO, NoReturn

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


def open_upload(path: Path) -> BinaryIO:
    """The uploaded file opened for reading, or the user-facing error for a file that is gone."""
    try:
        return path.open("rb")
    except FileNotFoundError:
        fail("file", "The uploaded file is missing on the server; upload it again.")
    except OSError as exc:
        fail("file", f"The file could not be opened ({exc.strerror or exc}).")
