"""Engine and session handling shared by the API and the workers."""
from __future__ import annotations

import json
import logging
import re
from collections import namedtuple
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from decimal import Decimal
import time
from pathlib import Path
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, Select, create_engine, event, exc, literal_column
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.base import Executable

from trainyard.db import gevent_wait

logger = logging.getLogger(__name__)

# A JSON string (skipped whole, so text inside one is never touched), or a number with a positive
# exponent (json.dumps writes 1e+20); one with a negative exponent reads back as a float already.
_STRING_OR_EXPONENT = re.compile(r'"(?:[^"\\]|\\.)*"|(-?\d+(?:\.\d+)?[eE]\+?\d+)')
_MAYBE_EXPONENT = re.compile(r"\d[eE]\+?\d")


def status_sql(status: str) -> ColumnElement[Any]:
    """A job status written into a statement as a literal, not bound as a parameter, for statements whose
    plan depends on it. psycopg prepares a statement a connection runs for the fifth time, and Postgres may
    then keep one generic plan for any parameters: with `status = $1` it can neither use a partial index on
    a status (`ix_jobs_queue`) nor estimate how many jobs have it (a submission's queue position counted the
    queue through another index, 47 ms under `make bench-scale`'s flood; its running jobs, by reading the
    table)."""
    if not status.isidentifier():
        raise ValueError(f"not a status: {status!r}")
    return literal_column(f"'{status}'")


def dumps_json(value: Any) -> str:
    """JSON text for a JSON column, in which a float reads back as a float.

    Postgres stores a JSONB number as `numeric` and writes it back without an exponent: the 1e+20 that
    json.dumps writes for the float 1e20 comes back as 100000000000000000000, which json.loads reads as
    an int. Floats are written in full with a fraction instead ("100000000000000000000.0"), which keeps
    both the value and its type (a numeric keeps the digits after its point). SQLite keeps the text as is.
    """
    text = json.dumps(value)
    if not _MAYBE_EXPONENT.search(text):  # the common case: no float in exponent form
        return text
    return _STRING_OR_EXPONENT.sub(_without_exponent, text)


def _without_exponent(match: re.Match[str]) -> str:
    number = match.group(1)
    if number is None:
        return match.group(0)  # a string
    digits = format(Decimal(number), "f")
    return digits if "." in digits else digits + ".0"


def make_engine(database_url: str) -> Engine:
    if database_url.startswith("sqlite"):
        path = database_url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(database_url, connect_args={"timeout": 30}, json_serializer=dumps_json)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
            # WAL lets the API read while a worker writes; foreign keys make deletes cascade as on Postgres.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    gevent_wait.install()  # a gevent-patched API worker: psycopg waits on a libev watcher, not poll's emulation
    engine = create_engine(database_url, pool_size=10, max_overflow=20, json_serializer=dumps_json)
    _ping_idle_connections(engine)
    return engine


# A connection back in the pool for less than this is handed out again without a ping.
PING_AFTER_IDLE_SECONDS = 1.0


def _ping_idle_connections(engine: Engine) -> None:
    """`pool_pre_ping`, but only for connections that sat idle in the pool.

    A ping is one more round trip, and a busy API reuses each connection within milliseconds; a
    connection broken since (Postgres restarted) fails its first query, SQLAlchemy then invalidates
    the whole pool, and the next checkout connects afresh. A connection idle for longer than
    PING_AFTER_IDLE_SECONDS is pinged first, as pool_pre_ping would.
    """

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_conn, record) -> None:  # type: ignore[no-untyped-def]
        record.info["checked_in_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_conn, record, _proxy) -> None:  # type: ignore[no-untyped-def]
        idle_since = record.info.get("checked_in_at")
        if idle_since is not None and time.monotonic() - idle_since < PING_AFTER_IDLE_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except engine.dialect.loaded_dbapi.Error as err:
            # The pool discards this connection and checks out (or opens) another one.
            raise exc.DisconnectionError(str(err)) from err


class Database:
    """One engine and a session factory; `session()` commits on success, rolls back on error, closes."""

    def __init__(self, database_url: str) -> None:
        self.url = database_url
        self.engine = make_engine(database_url)
        self._factory = sessionmaker(self.engine, expire_on_commit=False)
        # Autocommit: no BEGIN/COMMIT round trips around a request that only reads, or a write of one
        # statement (`run`).
        self._autocommit_engine = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self._read_factory = sessionmaker(self._autocommit_engine, expire_on_commit=False)
        self._compiled: dict[Any, tuple[str, dict[str, Any], Any]] = {}

    @contextmanager
    def session(self) -> Iterator[Session]:
        session = self._factory()
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    @contextmanager
    def read_session(self) -> Iterator[Session]:
        """A session for reads only: each statement runs on its own, without a transaction around
        it, which saves two round trips per request. Never write through it (nothing would be
        atomic); use `session()` for that."""
        session = self._read_factory()
        try:
            yield session
        finally:
            session.close()

    @contextmanager
    def read_connection(self) -> Iterator[Connection]:
        """A plain connection in autocommit, for the hottest reads: no ORM session, no transaction."""
        with self._autocommit_engine.connect() as conn:
            yield conn

    def first_row(self, stmt: Select[Any], params: dict[str, Any]) -> Any:
        """The first row of a Core `stmt` (a tuple whose columns also read by name), or None, in autocommit.

        For the hottest read, the status poll: on Postgres the statement is compiled once and run straight
        through psycopg on a pooled connection, without SQLAlchemy's per-execution result set-up (which
        builds a description of every column: a fifth of a poll's time). Values are psycopg's own, which
        are what SQLAlchemy hands back for these types (JSONB decoded, timestamps aware); SQLite goes
        through SQLAlchemy."""
        if self.engine.dialect.name != "postgresql":
            with self.read_connection() as conn:
                return conn.execute(stmt, params).first()
        return self._run_raw(stmt, params, fetch="one")

    def all_rows(self, stmt: Select[Any], params: dict[str, Any]) -> list[Any]:
        """Every row of a Core `stmt`, in autocommit, by `first_row`'s path (compiled once, straight
        through psycopg on Postgres)."""
        if self.engine.dialect.name != "postgresql":
            with self.read_connection() as conn:
                return list(conn.execute(stmt, params).all())
        return self._run_raw(stmt, params, fetch="all")

    def run(self, stmt: Executable, params: dict[str, Any]) -> None:
        """A Core write statement with bind parameters `params`, alone in autocommit (one round trip, no
        BEGIN/COMMIT): on Postgres compiled once and run straight through psycopg as `first_row` does (the
        outbox marker of every submission)."""
        if self.engine.dialect.name != "postgresql":
            with self._autocommit_engine.connect() as conn:  # the statement commits on its own
                conn.execute(stmt, params)
            return
        self._run_raw(stmt, params, fetch=None)

    def _run_raw(self, stmt: Any, params: dict[str, Any], *, fetch: str | None) -> Any:
        compiled = self._compiled.get(stmt)
        if compiled is None:
            sql = stmt.compile(dialect=self.engine.dialect)
            defaults = {name: value for name, value in sql.params.items() if value is not None}
            row_type = (namedtuple("Row", list(stmt.selected_columns.keys()), rename=True)  # type: ignore[misc]
                        if fetch else None)
            compiled = self._compiled[stmt] = (str(sql), defaults, row_type)
        text_, defaults, row_type = compiled
        conn = self.engine.raw_connection()
        dbapi_conn = conn.driver_connection
        try:
            dbapi_conn.autocommit = True  # no BEGIN; put back before the connection returns to the pool
            with dbapi_conn.cursor() as cur:
                cur.execute(text_, {**defaults, **params})
                rows = cur.fetchall() if fetch == "all" else [] if fetch is None else cur.fetchmany(1)
            dbapi_conn.autocommit = False
        except self.engine.dialect.loaded_dbapi.Error as err:
            lost = bool(dbapi_conn.closed or dbapi_conn.broken)
            if lost:
                conn.invalidate()  # as SQLAlchemy does on a disconnect: the pool opens a new one
            else:
                dbapi_conn.autocommit = False
            # SQLAlchemy's own exception for it (OperationalError, ...), as every other query raises
            raise exc.DBAPIError.instance(text_, params, err, self.engine.dialect.loaded_dbapi.Error,
                                          connection_invalidated=lost, dialect=self.engine.dialect) from err
        finally:
            conn.close()
        if fetch == "all":
            return [row_type._make(row) for row in rows]
        return row_type._make(rows[0]) if rows else None

    def dispose(self) -> None:
        self.engine.dispose()


def aware(value: datetime | None) -> datetime | None:
    """A datetime read from the database, UTC-aware: SQLite hands back naive ones (stored as UTC)."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


def db_time(db: Database, value: datetime) -> datetime:
    """A UTC datetime as the database compares it (naive on SQLite)."""
    return value.replace(tzinfo=None) if db.url.startswith("sqlite") else value


def upgrade_schema(database_url: str) -> None:
    """`alembic upgrade head` against `database_url`, using the repository's migrations."""
    from alembic import command
    from alembic.config import Config

    root = Path(__file__).resolve().parents[2]
    cfg = Config(str(root / "alembic.ini"))
    cfg.set_main_option("script_location", str(root / "migrations"))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    command.upgrade(cfg, "head")


# Every table, registered in one place (trainyard/db/tables.py): whoever imports a model (the app, the
# workers, Alembic) imports this package first and so sees the whole schema.
from trainyard.db import tables as _tables  # noqa: E402,F401
