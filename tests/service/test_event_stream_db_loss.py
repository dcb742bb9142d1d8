"""An event stream whose database goes away sends an `error` event with `retry` and ends cleanly; the
client (`Trainyard.events`) comes back with `Last-Event-ID`, waits out the 503s while the database is
still gone, and then gets every event exactly once (issue 15).

The database is a throwaway one of this module, its own API process on it: connections to it are refused
(`ALLOW_CONNECTIONS false`) and its sessions terminated, which is what a database that went away looks
like to the API, without touching the Postgres server that other tests share.
"""
from __future__ import annotations

import json
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import requests

from client import Trainyard
from client.api import Event
from service.auth import create_token
from trainyard.db import Database
from trainyard.db.models import EpochMetrics, Job
from trainyard.spec import validate_spec
from tests.conftest import PG_ADMIN_DSN, PG_URL_BASE, ROOT, start_api, tiny_spec, wait_until


@pytest.fixture(scope="module")
def lonely_db(service_env: dict[str, str]) -> Iterator[tuple[str, str]]:
    name = f"trainyard_test_dbloss_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"{PG_URL_BASE}/{name}"
    subprocess.run([str(ROOT / "bin" / "migrate")], env={**service_env, "TRAINYARD_DATABASE_URL": url}, check=True,
                   cwd=ROOT)
    yield name, url
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _database_gone(name: str, gone: bool) -> None:
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS {"false" if gone else "true"}')
        if gone:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))


def _raw_events(resp: requests.Response) -> Iterator[dict[str, Any]]:
    block: dict[str, Any] = {}
    for line in resp.iter_lines(decode_unicode=True):
        if line == "":
            if block:
                yield block
            block = {}
        elif not line.startswith(":"):
            field, _, value = line.partition(": ")
            block[field] = value


def test_a_stream_that_loses_its_database_ends_with_an_error_and_the_client_resumes(
        lonely_db: tuple[str, str], service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> None:
    name, url = lonely_db
    db = Database(url)
    with db.session() as s:
        token = create_token(s, "db-loss").token
    with db.session() as s:
        from service.auth import authenticate

        tenant = authenticate(s, token).tenant_id  # type: ignore[union-attr]
        job = Job(tenant_id=tenant, name="idle", status="running", spec=validate_spec(tiny_spec()), epochs=5)
        s.add(job)
    job_id = job.id

    def add_epochs(*epochs: int) -> None:
        with db.session() as s:
            s.add_all(EpochMetrics(job_id=job_id, epoch=e, values={"loss": 1.0 / e}) for e in epochs)

    proc, api = start_api({**service_env, "TRAINYARD_DATABASE_URL": url, "TRAINYARD_API_WORKERS": "1",
                           "TRAINYARD_EVENTS_KEEPALIVE_SECONDS": "0.5"},
                          tmp_path_factory.mktemp("db-loss") / "api.log")
    try:
        received: list[Event] = []
        failure: list[BaseException] = []

        def follow() -> None:
            try:
                for event in Trainyard(api, token, timeout=10).events(job_id, read_timeout=15, reconnects=10):
                    received.append(event)
            except BaseException as exc:  # noqa: BLE001 - reported by the test below
                failure.append(exc)

        reader = threading.Thread(target=follow, daemon=True)
        reader.start()
        add_epochs(1, 2)
        wait_until(lambda: len([e for e in received if e.event == "epoch"]) == 2, 30, what="epochs 1 and 2")
        raw = requests.get(f"{api}/v1/jobs/{job_id}/events", headers={"Authorization": f"Bearer {token}"},
                           stream=True, timeout=30)
        raw_events = _raw_events(raw)
        assert next(raw_events)["event"] == "status"

        db.dispose()
        _database_gone(name, True)
        try:
            # The raw stream: an error event without an id, saying when to come back, then a clean end.
            rest = list(raw_events)
            assert [e["event"] for e in rest if e.get("event") != "epoch"] == ["error"], rest
            error = rest[-1]
            assert "id" not in error and error["retry"] == "5000"
            problem = json.loads(error["data"])
            assert problem["status"] == 503 and problem["type"].endswith("/service_unavailable")
            # Reconnecting while it is still gone is a 503 with Retry-After (the client waits it out).
            refused = requests.get(f"{api}/v1/jobs/{job_id}/events", timeout=30,
                                   headers={"Authorization": f"Bearer {token}", "Last-Event-ID": "1"})
            assert refused.status_code == 503 and refused.headers["Retry-After"] == "5"
            time.sleep(6)  # past the client's first reconnect (retry: 5 s), which meets a 503
        finally:
            _database_gone(name, False)
        add_epochs(3)
        with db.session() as s:
            s.get(Job, job_id).status = "cancelled"
        reader.join(60)
        assert not reader.is_alive() and not failure, failure
    finally:
        proc.stop()
        db.dispose()

    kinds = [(e.event, e.data.get("epoch") or e.data.get("status")) for e in received]
    assert kinds[0] == ("status", "running") and kinds[-1] == ("end", "cancelled"), kinds
    assert [k for k in kinds if k[0] == "epoch"] == [("epoch", 1), ("epoch", 2), ("epoch", 3)], kinds
    assert ("status", "cancelled") in kinds and all(e.event != "error" for e in received)
    ids = [e.id for e in received]
    assert ids == sorted(ids) and len(set(ids)) == len(ids), ids
    assert "lost its database" in proc.log.read_text()
