"""`Idempotency-Key` on POST /v1/jobs: same key and body -> same job; same key, other body -> 409."""
from __future__ import annotations

import json
import secrets
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import requests

from tests.conftest import tiny_spec


def _post(client: Any, auth: dict[str, str], body: Any, key: str | None) -> Any:
    headers = dict(auth)
    if key is not None:
        headers["Idempotency-Key"] = key
    return client.post("/v1/jobs", data=json.dumps(body), headers=headers, content_type="application/json")


def test_same_key_and_body_returns_the_same_job(client: Any, auth: dict[str, str]) -> None:
    key = secrets.token_hex(8)
    first = _post(client, auth, tiny_spec(name="idem"), key)
    assert first.status_code == 201, first.get_json()
    assert "Idempotent-Replayed" not in first.headers
    # The same JSON, formatted differently, is the same body.
    again = client.post("/v1/jobs", data=json.dumps(tiny_spec(name="idem"), indent=2, sort_keys=True),
                        headers={**auth, "Idempotency-Key": key}, content_type="application/json")
    assert again.status_code == 201
    assert again.get_json()["id"] == first.get_json()["id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Location"] == first.headers["Location"]
    listed = client.get("/v1/jobs?limit=200", headers=auth).get_json()["jobs"]
    assert sum(1 for j in listed if j["id"] == first.get_json()["id"]) == 1


def test_same_key_other_body_is_409(client: Any, auth: dict[str, str]) -> None:
    key = secrets.token_hex(8)
    assert _post(client, auth, tiny_spec(name="a"), key).status_code == 201
    other = _post(client, auth, tiny_spec(name="b"), key)
    assert other.status_code == 409
    assert other.content_type == "application/problem+json"
    assert "Idempotency-Key" in other.get_json()["detail"]


def test_without_a_key_every_post_creates_a_job(client: Any, auth: dict[str, str]) -> None:
    a = _post(client, auth, tiny_spec(), None).get_json()["id"]
    b = _post(client, auth, tiny_spec(), None).get_json()["id"]
    assert a != b


def test_keys_are_per_tenant(client: Any, auth: dict[str, str], other_auth: dict[str, str]) -> None:
    key = secrets.token_hex(8)
    mine = _post(client, auth, tiny_spec(), key).get_json()["id"]
    theirs = _post(client, other_auth, tiny_spec(name="other"), key)
    assert theirs.status_code == 201 and theirs.get_json()["id"] != mine


def test_invalid_key_and_invalid_body(client: Any, auth: dict[str, str]) -> None:
    too_long = _post(client, auth, tiny_spec(), "k" * 201)
    assert too_long.status_code == 422
    assert too_long.get_json()["errors"][0]["field"] == "header.Idempotency-Key"
    # An invalid spec is refused and does not use up the key.
    key = secrets.token_hex(8)
    bad = _post(client, auth, tiny_spec(training={"epochs": 0}), key)
    assert bad.status_code == 422
    assert _post(client, auth, tiny_spec(), key).status_code == 201


def test_concurrent_requests_with_one_key_create_one_job(api_url: str, auth: dict[str, str]) -> None:
    key = secrets.token_hex(8)

    def submit(_: int) -> requests.Response:
        return requests.post(f"{api_url}/v1/jobs", json=tiny_spec(name="race"), timeout=10,
                             headers={**auth, "Idempotency-Key": key})

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(submit, range(8)))
    assert {r.status_code for r in responses} == {201}
    assert len({r.json()["id"] for r in responses}) == 1
