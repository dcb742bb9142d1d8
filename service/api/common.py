"""Small helpers shared by the resource modules."""
from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import json
import math
import re
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import IO, Any, TypeVar

from flask import Request, current_app, g, request
from sqlalchemy import Row, Select, select
from sqlalchemy.orm import Session
from werkzeug.formparser import FormDataParser, MultiPartParser

from service.errors import BadRequest, NotFound, PayloadTooLarge, UnsupportedMediaType, ValidationFailed
from trainyard.db import Database
from trainyard.db.gevent_wait import gevent_patched
from trainyard.db.models import Dataset, Job
from trainyard.db.sweeps import Sweep
from trainyard.timestamps import iso


# Every id the server issues (trainyard.db.models.new_id). Anything else in a URL cannot name a row, so it
# answers 404 without reaching the database (a NUL byte there would be a driver error, not a 404).
_SERVER_ID = re.compile(r"[a-z]{2,4}_[0-9a-f]{32}")


def is_server_id(value: object, prefix: str) -> bool:
    return isinstance(value, str) and value.startswith(prefix + "_") and _SERVER_ID.fullmatch(value) is not None


# Every tenant-scoped kind of row a URL can name: its id prefix and what a 404 calls it.
OWNED: dict[type, tuple[str, str]] = {Job: ("job", "job"), Sweep: ("swp", "sweep"), Dataset: ("ds", "data set")}
Owned = TypeVar("Owned", Job, Sweep, Dataset)


def _owned_id(model: type, object_id: str) -> None:
    """A 404 for an id this server cannot have issued: it is never sent to the database."""
    if not is_server_id(object_id, OWNED[model][0]):
        raise _not_found(model, object_id)


def _not_found(model: type, object_id: str) -> NotFound:
    return NotFound(f"There is no {OWNED[model][1]} {object_id}.")


def load_owned(session: Session, model: type[Owned], object_id: str, *, lock: bool = False) -> Owned:
    """The `model` row `object_id` of the request's tenant (locked FOR UPDATE with `lock`), or a 404.

    Another tenant's row answers exactly like a missing one: ids must not leak across tenants.
    """
    _owned_id(model, object_id)
    row = session.get(model, object_id, with_for_update=True if lock else None)
    if row is None or row.tenant_id != tenant_id():
        raise _not_found(model, object_id)
    return row


def load_owned_many(session: Session, model: type[Owned], object_ids: list[str]) -> list[Owned]:
    """`load_owned` for several ids in one query: the rows in the order of `object_ids`, or a 404 for the
    first one that is not the request's tenant's."""
    for object_id in object_ids:
        _owned_id(model, object_id)
    rows = session.execute(select(model).where(model.id.in_(object_ids), model.tenant_id == tenant_id())).scalars()
    found = {row.id: row for row in rows}
    for object_id in object_ids:
        if object_id not in found:
            raise _not_found(model, object_id)
    return [found[object_id] for object_id in object_ids]


def load_owned_row(db: Database, model: type, object_id: str, stmt: Select[Any]) -> Row[Any]:
    """`load_owned` in Core, for hot read paths: the one row `stmt` selects with the parameters `id` and
    `tenant_id` (it must filter on both), read with `Database.first_row`, or the same 404."""
    _owned_id(model, object_id)
    row = db.first_row(stmt, {"id": object_id, "tenant_id": tenant_id()})
    if row is None:
        raise _not_found(model, object_id)
    return row


def _on_native_thread(fn: Callable[..., Any], *args: Any) -> Callable[[], Any]:
    """Start `fn(*args)` on an OS thread and return a call that waits for its result (or raises its error).

    In a gevent worker (monkey-patched `threading` makes threads greenlets) that is the hub's thread pool,
    whose waits let the worker's other greenlets run; elsewhere a small pool of ordinary threads."""
    if gevent_patched():
        import gevent

        return gevent.get_hub().threadpool.spawn(fn, *args).get
    return _upload_threads().submit(fn, *args).result


@functools.cache
def _upload_threads() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=4, thread_name_prefix="upload-write")


# How much of an upload is handed to the writing thread at a time: each hand-over costs a wake-up of the
# event loop, which at the form parser's 256 KiB blocks took what the thread saved (bench/README.md).
SPOOL_BATCH_BYTES = 4 * 1024 * 1024


class SpooledUpload:
    """A named temporary file that keeps the size and sha256 of what the form parser writes to it, so the
    upload is never read again just to hash it.

    Hashing and writing run on another thread (hashlib and file writes release the GIL), a batch of blocks
    at a time, while the form parser receives and parses the next batch: on one core they were a third of
    an upload's time. One batch is in flight at most, so memory stays at two batches; every other use of
    the file first waits for what is in flight, and raises what the thread raised (a full disk)."""

    def __init__(self, directory: str) -> None:
        self._file = tempfile.NamedTemporaryFile("w+b", dir=directory, prefix="upload-")
        self.name = self._file.name
        self.size = 0
        self._sha256 = hashlib.sha256()
        self._batch: list[bytes] = []
        self._batch_bytes = 0
        self._in_flight: Callable[[], Any] | None = None

    def write(self, data: bytes) -> int:
        self._batch.append(bytes(data))  # werkzeug's blocks are new bytes objects: bytes() does not copy
        self._batch_bytes += len(data)
        self.size += len(data)
        if self._batch_bytes >= SPOOL_BATCH_BYTES:
            self._hand_over()
        return len(data)

    def _absorb(self, blocks: list[bytes]) -> None:
        for data in blocks:
            self._sha256.update(data)
        self._file.writelines(blocks)

    def _wait(self) -> None:
        if self._in_flight is not None:
            wait, self._in_flight = self._in_flight, None
            wait()

    def _hand_over(self) -> None:
        self._wait()
        if self._batch:
            self._in_flight = _on_native_thread(self._absorb, self._batch)
            self._batch, self._batch_bytes = [], 0

    def _settle(self) -> None:
        self._hand_over()
        self._wait()

    def sha256(self) -> str:
        self._settle()
        return self._sha256.hexdigest()

    def close(self) -> None:
        try:
            with contextlib.suppress(OSError):  # an aborted upload: the file is discarded anyway
                self._wait()  # the thread must be done with the file before it is closed
        finally:
            self._batch = []
            self._file.close()

    def __getattr__(self, name: str) -> Any:  # read, readline, seek, tell, flush, ...
        self._settle()
        return getattr(self._file, name)

    def __iter__(self) -> Any:
        self._settle()
        return iter(self._file)


# Bytes the form parser asks the request body for at a time (werkzeug's own is 64 KiB). gunicorn received
# up to 1 MiB of a body of known length per recv() and kept what a read did not take in a buffer it copied
# again on every later read: at 64 KiB a 200 MB upload was copied some eight times over, the largest cost of
# an upload (bench/README.md). bin/api's workers now receive at most this much per recv()
# (service/gunicorn_conf.py). It must stay below the request's max_form_memory_size (500 kB): werkzeug
# refuses any block that would take its buffer over it, file parts included.
UPLOAD_READ_SIZE = 256 * 1024


def receive_body(sink: IO[bytes], length: int) -> None:
    """Write the request body, `length` bytes (its Content-Length), to `sink` in `UPLOAD_READ_SIZE` blocks,
    read from the server's own input stream (werkzeug's wrapper would copy each block twice more). A body that
    ends early is a 400.

    Receiving from gunicorn's socket straight into the spool's buffers, past gunicorn's reader, was tried:
    a fifth less CPU over a socket pair, but under the gevent worker an upload cost 0.64 s of CPU against
    0.41 s this way (bench/README.md)."""
    source = request.environ["wsgi.input"]
    received = 0
    while received < length and (block := source.read(min(UPLOAD_READ_SIZE, length - received))):
        sink.write(block)
        received += len(block)
    if received < length:
        raise BadRequest(f"The body ended after {received} of the {length} bytes its Content-Length says.")


class UploadFormParser(FormDataParser):
    """werkzeug's form parser, reading a multipart body in `UPLOAD_READ_SIZE` blocks (werkzeug 3 builds its
    MultiPartParser in `_parse_multipart` with no way to pass the buffer size; every limit is passed on)."""

    def _parse_multipart(self, stream: IO[bytes], mimetype: str, content_length: int | None,
                         options: dict[str, str]) -> Any:
        parser = MultiPartParser(stream_factory=self.stream_factory, max_form_memory_size=self.max_form_memory_size,
                                 max_form_parts=self.max_form_parts, cls=self.cls, buffer_size=UPLOAD_READ_SIZE)
        boundary = options.get("boundary", "").encode("ascii")
        if not boundary:
            raise ValueError("Missing boundary")
        form, files = parser.parse(stream, boundary, content_length)
        return stream, form, files


class ApiRequest(Request):
    """Flask's request, with uploaded files spooled to a named file in the var folder.

    The upload route validates and stores that very file: a large data set is written to disk once,
    not spooled by the form parser and then copied. The file is removed when the request ends.
    """

    form_data_parser_class = UploadFormParser

    def _get_file_stream(self, total_content_length: int | None, content_type: str | None,
                         filename: str | None = None, content_length: int | None = None) -> IO[bytes]:
        return new_spool()  # type: ignore[return-value]


def new_spool() -> SpooledUpload:
    """A spool file for an upload in the var folder: a form's file part, or a body that is the file."""
    var_dir = current_app.extensions["trainyard"].settings.var_dir
    var_dir.mkdir(parents=True, exist_ok=True)
    return SpooledUpload(str(var_dir))


def tenant_id() -> str:
    return g.principal.tenant_id


def json_body(max_bytes: int) -> Any:
    """The request's JSON body, or a problem: 415 for another media type, 413 too big, 400 malformed."""
    mimetype = request.mimetype or ""
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        raise UnsupportedMediaType("Send the body as JSON with 'Content-Type: application/json'.")
    if request.content_length is not None and request.content_length > max_bytes:
        raise PayloadTooLarge(f"The JSON body is larger than {max_bytes} bytes.")
    raw = request.stream.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise PayloadTooLarge(f"The JSON body is larger than {max_bytes} bytes.")
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadRequest("The body is not UTF-8 text.") from None
    except json.JSONDecodeError as exc:
        raise BadRequest(f"The body is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}.") from None
    except ValueError:  # json refuses an integer of more than 4,300 digits with a plain ValueError
        raise BadRequest("The body is not valid JSON: it holds an integer of more than 4300 digits.") from None
    except RecursionError:
        raise BadRequest("The JSON body is nested too deeply.") from None


# Every integer a client sends is checked against a range before it reaches SQL: Postgres' bigint (and
# SQLite's INTEGER) stop at 2**63 - 1, and a larger Python int is a driver error there, not a 4xx.
MAX_BIGINT = 2**63 - 1
# ASCII digits only (int() also takes "١٢", "1_000" and spaces); 20 characters hold any int64.
_WHOLE_NUMBER = re.compile(r"-?[0-9]{1,20}", re.ASCII)


def whole_number(raw: str, field: str, *, minimum: int, maximum: int) -> int:
    """`raw` as an int within [minimum, maximum], or a 422 naming `field` (e.g. "query.after")."""
    value = int(raw) if _WHOLE_NUMBER.fullmatch(raw) else None
    if value is None or not (minimum <= value <= maximum):
        kind, _, name = field.partition(".")
        raise ValidationFailed(
            f"The {'query parameter' if kind == 'query' else kind} '{name}' must be a whole number from {minimum} "
            f"to {maximum}.",
            errors=[{"field": field, "message": f"Must be a whole number from {minimum} to {maximum}."}],
        )
    return value


def int_arg(name: str, default: int | None, *, minimum: int, maximum: int) -> int | None:
    """Query parameter `name` as a range-checked int, `default` when absent (`?limit=` is not a number)."""
    raw = request.args.get(name)
    if raw is None:
        return default
    return whole_number(raw, f"query.{name}", minimum=minimum, maximum=maximum)


def encode_cursor(created_at: datetime, row_id: str) -> str:
    payload = json.dumps([iso(created_at), row_id]).encode()
    return base64.urlsafe_b64encode(payload).decode().rstrip("=")


# What this server issues is ~100 characters: base64 of `["<ISO timestamp>", "<id>"]`.
_CURSOR = re.compile(r"[A-Za-z0-9_-]{1,200}={0,2}", re.ASCII)


def _payload(cursor: str) -> Any:
    if not _CURSOR.fullmatch(cursor):
        raise ValueError
    return json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))


_CURSOR_ERRORS = (ValueError, TypeError, OverflowError, UnicodeDecodeError, RecursionError)


def _not_a_cursor() -> ValidationFailed:
    return ValidationFailed(
        "The cursor is not one this server issued; use the 'next_cursor' of a previous page.",
        errors=[{"field": "query.cursor", "message": "Not a valid cursor."}],
    )


def _created_position(payload: Any, kind: str) -> tuple[datetime, str]:
    if not (isinstance(payload, list) and len(payload) == 2 and all(isinstance(v, str) for v in payload)):
        raise ValueError
    created, row_id = payload
    if not is_server_id(row_id, kind) or len(created) > 40:
        raise ValueError
    dt = datetime.fromisoformat(created.replace("Z", "+00:00")).astimezone(timezone.utc)
    if iso(dt) != created:  # only the exact form encode_cursor writes (fromisoformat takes more)
        raise ValueError
    return dt, row_id


def decode_cursor(cursor: str, kind: str = "job") -> tuple[datetime, str]:
    """The `(created_at as aware UTC, id)` a cursor of `encode_cursor` holds; anything else, whatever it
    decodes to, is a 422 naming the cursor (never a 500: it is client input like any other)."""
    try:
        return _created_position(_payload(cursor), kind)
    except _CURSOR_ERRORS:
        raise _not_a_cursor() from None


def encode_sorted_cursor(sort: str, value: float | None, row_id: str) -> str:
    """A cursor of a list sorted by a value (`sort`, e.g. `-best_value`): the sort, the last row's value
    (null when it had none) and its id. Lists newest first keep `encode_cursor`'s form."""
    payload = json.dumps([sort, value, row_id]).encode()
    return base64.urlsafe_b64encode(payload).decode().rstrip("=")


def decode_job_cursor(cursor: str, sort: str, newest_first: str) -> tuple[Any, str]:
    """The position a jobs-list cursor holds, for a list sorted by `sort`: `(created_at, id)` when `sort` is
    `newest_first`, else `(value or None, id)`. A cursor of another sort is a 422 that says so."""
    try:
        payload = _payload(cursor)
        if isinstance(payload, list) and len(payload) == 3 and isinstance(payload[0], str) and len(payload[0]) < 40:
            issued_for = payload[0]
        elif isinstance(payload, list) and len(payload) == 2:
            issued_for = newest_first
        else:
            raise ValueError
        if issued_for != sort:
            raise ValidationFailed(
                f"The cursor pages the list sorted by {issued_for}, not by {sort}; start again without a cursor "
                "to page another sort.",
                errors=[{"field": "query.cursor", "message": f"A cursor of sort={issued_for}, not sort={sort}."}],
            )
        if sort == newest_first:
            return _created_position(payload, "job")
        _, value, row_id = payload
        # Workers store finite best values only (null otherwise), so a cursor holds nothing else.
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not is_server_id(row_id, "job") or not (value is None or number):
            raise ValueError
        return (None if value is None else float(value)), row_id
    except _CURSOR_ERRORS:
        raise _not_a_cursor() from None
