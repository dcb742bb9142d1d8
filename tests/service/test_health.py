from __future__ import annotations

from typing import Any


def test_healthz_needs_no_token(client: Any) -> None:
    resp = client.get("/healthz")
    assert resp.status_code == 200
    assert resp.get_json() == {"status": "ok"}


def test_readyz_reports_database_broker_and_workers(client: Any, worker: Any) -> None:
    resp = client.get("/readyz")
    body = resp.get_json()
    assert resp.status_code == 200, body
    assert body["checks"]["database"]["ok"] and body["checks"]["broker"]["ok"]
    assert body["checks"]["workers"]["recently_seen"] >= 1


def test_openapi_document_is_served(client: Any) -> None:
    resp = client.get("/openapi.yaml")
    assert resp.status_code == 200
    assert b"openapi: 3." in resp.data
