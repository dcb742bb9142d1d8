"""No client input answers 5xx (issue 15): tampered pagination cursors, integers past 64 bits or negative
wherever a client passes one, weak ETags in If-None-Match, invalid and unsatisfiable Range headers. Each
is a 4xx problem+json naming what was wrong, or the documented answer."""
from __future__ import annotations

import base64
import hashlib
import io
import json
from typing import Any

import pytest

from tests.conftest import tiny_spec


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


TAMPERED_CURSORS = [
    *(b64(json.dumps(v).encode()) for v in (
        None, True, 0, -1, 1.5, 10**400, "2026-01-01T00:00:00Z", [], {}, {"a": 1, "b": 2}, [1, 2], [None, None],
        ["2026-01-01T00:00:00Z"], ["2026-01-01T00:00:00Z", "job_" + "0" * 32, 3], [10**30, "job_" + "0" * 32],
        [["2026"], "job_" + "0" * 32], ["2026-01-01T00:00:00Z", 12], ["2026-13-45T99:00:00Z", "job_" + "0" * 32],
        ["0001-01-01T00:00:00+14:00", "job_" + "0" * 32], ["9999-12-31T23:59:59-23:59", "job_" + "0" * 32],
        ["2026-01-01T00:00:00\u0000", "job_" + "0" * 32], ["2026-01-01T00:00:00Z", "job_" + "0" * 31 + "\u0000"],
        ["2026-01-01T00:00:00Z", "job_" + "0" * 32 + "'; DROP TABLE jobs; --"], ["x" * 5000, "y"],
    )),
    b64(b"[NaN, Infinity]"), b64(b'["2026-01-01T00:00:00Z", "job_' + b"0" * 32 + b'"'), b64(b"[" * 100_000 + b"]" * 100_000)[:3000],
    b64(b"[" * 5000 + b"]" * 5000), b64(b"\xff\xfe\x00"), b64(b"\x00" * 64), "!!!!", "%%%%", "====", "a", "ab=",
    "\u00e9t\u00e9", "A" * 3000, "eyJ", b64(b'{"__proto__": 1}'), b64(json.dumps([1e308 * 10 if False else 1e308, "x"]).encode()),
]


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/sweeps"])
@pytest.mark.parametrize("cursor", TAMPERED_CURSORS)
def test_tampered_cursors_are_422_naming_the_cursor(client: Any, auth: dict[str, str], path: str, cursor: str) -> None:
    resp = client.get(path, query_string={"cursor": cursor}, headers=auth)
    assert resp.status_code == 422, resp.get_data(as_text=True)[:300]
    assert resp.mimetype == "application/problem+json"
    assert [e["field"] for e in resp.get_json()["errors"]] == ["query.cursor"]


def test_a_cursor_from_another_list_is_refused(client: Any, auth: dict[str, str]) -> None:
    # A job cursor on /v1/sweeps (and the reverse) names a row of the wrong kind.
    for _ in range(2):
        client.post("/v1/jobs", json=tiny_spec(), headers=auth)
    cursor = client.get("/v1/jobs?limit=1", headers=auth).get_json()["next_cursor"]
    assert cursor
    assert client.get("/v1/jobs", query_string={"cursor": cursor}, headers=auth).status_code == 200
    assert client.get("/v1/sweeps", query_string={"cursor": cursor}, headers=auth).status_code == 422


BAD_INTEGERS = ["-1", "-9223372036854775809", "9223372036854775808", str(2**64), "1" + "0" * 30, "9" * 5000,
                "1.5", "1e3", "0x10", "abc", "", " ", "١٢", "+", "--1", "1_000_000_000_000_000_000_000"]


def _job(client: Any, auth: dict[str, str]) -> str:
    """A cancelled job: its event stream ends as soon as it has sent what there is."""
    job_id = client.post("/v1/jobs", json=tiny_spec(), headers=auth).get_json()["id"]
    assert client.post(f"/v1/jobs/{job_id}/cancel", headers=auth).status_code == 202
    return job_id


@pytest.mark.parametrize("value", BAD_INTEGERS)
def test_client_integers_are_range_checked_before_sql(client: Any, auth: dict[str, str], value: str) -> None:
    job = _job(client, auth)
    cases = [
        ("/v1/jobs", "limit"), ("/v1/sweeps", "limit"), (f"/v1/jobs/{job}/metrics", "after"),
        (f"/v1/jobs/{job}/diagnostics", "after"), (f"/v1/jobs/{job}/logs", "after"), (f"/v1/jobs/{job}/logs", "limit"),
        (f"/v1/jobs/{job}/events", "last_event_id"),
    ]
    for path, name in cases:
        resp = client.get(path, query_string={name: value}, headers=auth)
        assert resp.status_code in (400, 422), (path, name, resp.status_code, resp.get_data(as_text=True)[:300])
        assert resp.mimetype == "application/problem+json"
        assert f"query.{name}" in [e["field"] for e in resp.get_json().get("errors", [])], (path, resp.get_json())
    header = client.get(f"/v1/jobs/{job}/events", headers={**auth, "Last-Event-ID": value})
    if value.strip() == "":
        assert header.status_code == 200
        header.close()
    else:
        assert header.status_code == 422, (value, header.get_data(as_text=True)[:300])
        assert header.get_json()["errors"][0]["field"] == "header.Last-Event-ID"


@pytest.mark.parametrize("value", ["0", "9223372036854775807"])
def test_in_range_extremes_are_accepted(client: Any, auth: dict[str, str], value: str) -> None:
    job = _job(client, auth)
    for url in (f"/v1/jobs/{job}/logs?after={value}", f"/v1/jobs/{job}/events?last_event_id={value}"):
        resp = client.get(url, headers=auth)
        assert resp.status_code == 200, (url, resp.get_data(as_text=True)[:300])
        resp.close()


@pytest.fixture()
def checkpoint(app: Any, client: Any, auth: dict[str, str]) -> tuple[str, bytes]:
    """A job with a best checkpoint of 1000 known bytes."""
    from trainyard.db.models import Checkpoint
    from trainyard.store import checkpoint_key

    job_id = _job(client, auth)
    svc = app.extensions["trainyard"]
    data = bytes(range(250)) * 4
    key = checkpoint_key(job_id, 1)
    meta = svc.store.put(key, io.BytesIO(data))
    with svc.db.session() as s:
        s.add(Checkpoint(job_id=job_id, epoch=1, monitor="loss", value=0.5, artifact_key=key,
                         size_bytes=meta.size, sha256=meta.sha256, is_best=True))
    return f"/v1/jobs/{job_id}/checkpoints/best", data


@pytest.mark.parametrize("header, matches", [
    ('"{sha}"', True), ('W/"{sha}"', True), ('"other", W/"{sha}"', True), ("*", True), (' W/"{sha}" ', True),
    ('"other"', False), ('W/"other"', False), ('"{sha}x"', False), ("{sha}", False), ('W/', False), ('""', False),
    ('"a", , "b"', False),
])
def test_if_none_match_uses_weak_comparison(client: Any, auth: dict[str, str], checkpoint: tuple[str, bytes],
                                             header: str, matches: bool) -> None:
    url, data = checkpoint
    sha = hashlib.sha256(data).hexdigest()
    resp = client.get(url, headers={**auth, "If-None-Match": header.format(sha=sha)})
    assert resp.status_code == (304 if matches else 200), resp.status_code
    assert resp.headers["ETag"] == f'"{sha}"'
    if not matches:
        assert resp.data == data


def test_get_job_if_none_match_is_weak_too(client: Any, auth: dict[str, str]) -> None:
    job = _job(client, auth)
    etag = client.get(f"/v1/jobs/{job}", headers=auth).headers["ETag"]
    for header in (etag, "W/" + etag, f'"nope", W/{etag}', "*"):
        assert client.get(f"/v1/jobs/{job}", headers={**auth, "If-None-Match": header}).status_code == 304, header


@pytest.mark.parametrize("header, status, body", [
    ("bytes=10-5", 200, slice(None)),  # last before first: invalid, so ignored (RFC 9110 14.2)
    ("bytes=10-19", 206, slice(10, 20)),
    ("bytes=990-5000", 206, slice(990, 1000)),
    ("bytes=-10", 206, slice(990, 1000)),
    ("bytes=-5000", 206, slice(None)),
    ("bytes=1000-", 416, None),  # starts at the end: unsatisfiable
    ("bytes=" + "9" * 5000 + "-", 416, None),
    ("bytes=0-" + "9" * 5000, 206, slice(None)),
    ("bytes=-" + "9" * 5000, 206, slice(None)),
    ("bytes=-0", 416, None),
    ("bytes=\u0661-\u0662", 200, slice(None)),  # not ASCII digits: not a range
    ("bytes=0-1,5-6", 200, slice(None)),  # several ranges: served whole
    ("items=0-1", 200, slice(None)),
    ("bytes=", 200, slice(None)),
    ("bytes=-", 200, slice(None)),
    ("bytes=a-b", 200, slice(None)),
])
def test_range_headers(client: Any, auth: dict[str, str], checkpoint: tuple[str, bytes], header: str, status: int,
                       body: slice | None) -> None:
    url, data = checkpoint
    resp = client.get(url, headers={**auth, "Range": header})
    assert resp.status_code == status, (header, resp.status_code, resp.get_data(as_text=True)[:200])
    if body is not None:
        assert resp.data == data[body]
    else:
        assert resp.mimetype == "application/problem+json"
        assert resp.headers["Content-Range"] == f"bytes */{len(data)}"
