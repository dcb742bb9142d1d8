"""Promises of the README's Security model that other tests did not pin down: revocation within the token
cache time on every process of a real gunicorn API, tokens of 256 random bits, ids the server never issued
answered without the database, and another tenant's resources answered exactly like missing ones."""
from __future__ import annotations

import ast
import base64
import io
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from sqlalchemy import event

from service import create_app
from tests.conftest import ROOT, start_api, tiny_spec, wait_until
from tests.service.test_sweeps_api import example_body

CACHE_SECONDS = 3


def _flask(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "flask", "--app", "service", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=True)
    return done.stdout


@pytest.fixture(scope="module")
def short_cache_api(service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """bin/api with two processes, a token cache of a few seconds and quick keep-alives on event streams."""
    env = {**service_env, "TRAINYARD_TOKEN_CACHE_SECONDS": str(CACHE_SECONDS), "TRAINYARD_API_WORKERS": "2",
           "TRAINYARD_EVENTS_KEEPALIVE_SECONDS": "0.5"}
    api, url = start_api(env, tmp_path_factory.mktemp("short-cache-api") / "api.log")
    yield url, env
    api.stop()


def _revocable_token(env: dict[str, str], tenant: str) -> tuple[str, str]:
    """A token made and listed as an operator does, with the CLI: (token, token id)."""
    token = _flask(env, "tokens", "create", "--tenant", tenant, "--quiet").strip()
    return token, _flask(env, "tokens", "list", "--tenant", tenant).split()[0]


def test_a_revoked_token_is_refused_by_every_api_process_within_the_cache_time(
        short_cache_api: tuple[str, dict[str, str]]) -> None:
    url, env = short_cache_api
    token, token_id = _revocable_token(env, "revocation")
    headers = {"Authorization": f"Bearer {token}"}

    def status() -> int:
        # A new connection each time: gunicorn's two processes take turns accepting them.
        return requests.get(f"{url}/v1/jobs?limit=1", headers={**headers, "Connection": "close"},
                            timeout=10).status_code

    assert [status() for _ in range(20)] == [200] * 20  # both processes have checked and cached it
    _flask(env, "tokens", "revoke", token_id)
    revoked_at = time.monotonic()
    wait_until(lambda: all(status() == 401 for _ in range(10)), CACHE_SECONDS + 10, 0.1,
               "every API process to refuse the revoked token")
    assert time.monotonic() - revoked_at < CACHE_SECONDS + 3, "a revoked token outlived the cache time"
    assert [status() for _ in range(20)] == [401] * 20  # and it stays refused everywhere


def test_an_event_stream_ends_once_its_token_is_revoked(short_cache_api: tuple[str, dict[str, str]]) -> None:
    url, env = short_cache_api
    token, token_id = _revocable_token(env, "revoked-stream")
    headers = {"Authorization": f"Bearer {token}"}
    # Long, so the stream cannot end because the job did (should a session worker start it).
    job_id = requests.post(f"{url}/v1/jobs", json=tiny_spec(training={"epochs": 5000, "batch_size": 16}),
                           headers=headers, timeout=10).json()["id"]
    lines: list[str] = []
    with requests.get(f"{url}/v1/jobs/{job_id}/events", headers=headers, stream=True, timeout=10) as stream:
        assert stream.status_code == 200
        received = stream.iter_lines(decode_unicode=True)
        lines.append(next(received))  # open, and sending
        _flask(env, "tokens", "revoke", token_id)
        revoked_at = time.monotonic()
        for line in received:  # keep-alives every half second; the server ends the stream
            lines.append(line)
            assert time.monotonic() - revoked_at < CACHE_SECONDS + 10, "the stream outlived its token"
    assert time.monotonic() - revoked_at < CACHE_SECONDS + 3
    assert "event: end" not in lines  # not the job's end: the token's
    assert requests.get(f"{url}/v1/jobs/{job_id}/events", headers=headers, timeout=10).status_code == 401
    # The job is left queued: the suite's autouse fixture cancels it (tests/conftest.py).


def test_without_the_cache_a_revoked_token_is_refused_at_once(app: Any, settings: Any) -> None:
    from service.auth import create_token, revoke_token

    client = create_app(replace(settings, token_cache_seconds=0)).test_client()
    with app.extensions["trainyard"].db.session() as s:
        issued = create_token(s, "uncached")
    headers = {"Authorization": f"Bearer {issued.token}"}
    assert client.get("/v1/jobs", headers=headers).status_code == 200
    with app.extensions["trainyard"].db.session() as s:
        assert revoke_token(s, issued.token_id)
    assert client.get("/v1/jobs", headers=headers).status_code == 401


def test_tokens_carry_256_random_bits(make_token: Any) -> None:
    tokens = {make_token("entropy") for _ in range(5)}
    assert len(tokens) == 5
    for token in tokens:
        assert token.startswith("ty_")
        assert len(base64.urlsafe_b64decode(token[3:] + "=")) == 32


def test_a_json_body_over_the_cap_is_413_even_without_a_content_length(api_url: str, auth: dict[str, str]) -> None:
    """Sent in chunks, the body's size is only known as it is read: the read stops one byte past the cap."""
    def chunks() -> Iterator[bytes]:
        yield b'{"name": "'
        for _ in range(2 * 1024):
            yield b"x" * 1024  # 2 MiB in all, over the 1 MiB default
        yield b'"}'

    resp = requests.post(f"{api_url}/v1/jobs", data=chunks(), timeout=30,
                         headers={**auth, "Content-Type": "application/json"})
    assert resp.status_code == 413, resp.text
    assert resp.headers["Content-Type"] == "application/problem+json"


# --- Keras: nothing a client sent is ever deserialised ---------------------------------------------

# Keras entry points that rebuild objects from a config or a file: none may ever see client bytes.
_DESERIALISERS = {"from_config", "model_from_json", "model_from_yaml", "model_from_config", "deserialize_keras_object",
                  "TFSMLayer", "load_model"}


def _calls(root: Path) -> Iterator[tuple[Path, ast.Call, str]]:
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call):
                func = node.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                yield path, node, name


def test_keras_loads_only_the_workers_own_checkpoints_in_safe_mode() -> None:
    """Only the trainer loads a model, only its own checkpoint files, never with safe_mode off; nothing calls
    a config deserialiser. (That the paths are the trainer's own is read in engine.py and export.py.)"""
    loads = []
    for package in ("service", "workers"):
        for path, call, name in _calls(ROOT / package):
            if name not in _DESERIALISERS:
                continue
            where = path.relative_to(ROOT).as_posix()
            assert name == "load_model", f"{where}:{call.lineno} calls {name}"
            assert where in ("workers/trainer/engine.py", "workers/trainer/export.py"), f"{where}:{call.lineno}"
            safe = [k.value for k in call.keywords if k.arg == "safe_mode"]
            assert all(isinstance(v, ast.Constant) and v.value is True for v in safe), f"{where}:{call.lineno}"
            loads.append(where)
    assert loads  # the scan sees the loads that do exist
    backup = (ROOT / "workers/trainer/callbacks/backup.py").read_text()
    assert "load_weights(" in backup and "load_model(" not in backup  # resume backups are weights only


def test_keras_is_pinned_past_every_published_deserialisation_fix() -> None:
    from importlib.metadata import version

    from packaging.requirements import Requirement
    from packaging.version import Version

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    keras = next(Requirement(d) for d in project["dependencies"] if Requirement(d).name == "keras")
    assert Version(version("keras")) in keras.specifier
    assert Version("3.15.1") in keras.specifier
    assert not any(Version(v) in keras.specifier for v in ("3.13.2", "3.15.0", "4.0.0"))


# --- ids the server never issued ------------------------------------------------------------------

# The id each route argument takes, and ids of that shape this server can never have issued.
ID_PREFIXES = {"job_id": "job", "dataset_id": "ds", "sweep_id": "swp"}


def _never_issued(prefix: str) -> list[str]:
    other = next(p for p in ID_PREFIXES.values() if p != prefix)
    return ["x", f"{prefix}_{'0' * 31}", f"{prefix}_{'G' * 32}", f"{prefix}_{'0' * 33}", f"{other}_{'0' * 32}",
            f"{prefix.upper()}_{'0' * 32}", f"{prefix}_{'0' * 32}\x00"]


@contextmanager
def _statements(app: Any) -> Iterator[list[str]]:
    """SQL statements this thread sends through the app's engine while the block runs."""
    engine = app.extensions["trainyard"].db.engine
    me = threading.get_ident()
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if threading.get_ident() == me:
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def test_an_id_the_server_never_issued_is_a_404_without_reaching_the_database(settings: Any, make_token: Any) -> None:
    app = create_app(replace(settings, token_cache_seconds=600))
    client = app.test_client()
    headers = {"Authorization": f"Bearer {make_token('never-issued')}"}
    assert client.get("/v1/jobs", headers=headers).status_code == 200  # the token's check is cached now
    adapter = app.url_map.bind("localhost")
    checked: set[str] = set()
    for rule in app.url_map.iter_rules():
        if not rule.arguments or rule.endpoint == "static" or rule.endpoint.endswith(".static"):
            continue
        assert set(rule.arguments) <= set(ID_PREFIXES), f"{rule}: which ids does it take?"
        prefix = ID_PREFIXES[sorted(rule.arguments)[0]]
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            for bogus in _never_issued(prefix):
                path = adapter.build(rule.endpoint, {arg: bogus for arg in rule.arguments}, method=method)
                with _statements(app) as seen:
                    resp = client.open(path, method=method, headers=headers)
                assert resp.status_code == 404, (method, path, resp.status_code)
                assert resp.mimetype == "application/problem+json"
                assert seen == [], (method, path, seen)
        checked.add(rule.rule)
    assert {"/v1/jobs/<job_id>", "/v1/datasets/<dataset_id>", "/v1/sweeps/<sweep_id>"} <= checked


# --- another tenant's resources --------------------------------------------------------------------


def _npz() -> bytes:
    buf = io.BytesIO()
    np.savez(buf, x_train=np.ones((8, 4), dtype="float32"), y_train=np.arange(8) % 2)
    return buf.getvalue()


def test_another_tenants_resources_answer_exactly_like_missing_ones(client: Any, app: Any, auth: dict[str, str],
                                                                     other_auth: dict[str, str]) -> None:
    owned = {
        "job_id": client.post("/v1/jobs", json=tiny_spec(), headers=auth).get_json()["id"],
        "dataset_id": client.post("/v1/datasets", headers=auth, content_type="multipart/form-data",
                                  data={"file": (io.BytesIO(_npz()), "d.npz")}).get_json()["id"],
        "sweep_id": client.post("/v1/sweeps", json=example_body(), headers=auth).get_json()["id"],
    }
    missing = {arg: f"{prefix}_{'0' * 32}" for arg, prefix in ID_PREFIXES.items()}
    adapter = app.url_map.bind("localhost")
    try:
        for rule in app.url_map.iter_rules():
            if not set(rule.arguments) & set(ID_PREFIXES):
                continue
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
                answers = []
                for ids in (owned, missing):
                    path = adapter.build(rule.endpoint, {a: ids[a] for a in rule.arguments}, method=method)
                    resp = client.open(path, method=method, headers=other_auth)
                    body = resp.get_data(as_text=True)
                    for arg in rule.arguments:
                        body = body.replace(ids[arg], "<id>")
                    answers.append((resp.status_code, resp.mimetype, body))
                assert answers[0] == answers[1], (method, rule.rule, answers)
                assert answers[0][0] == 404
        # Nothing the other tenant sent changed the owner's resources.
        assert client.get(f"/v1/jobs/{owned['job_id']}", headers=auth).get_json()["cancel_requested"] is False
        assert client.get(f"/v1/datasets/{owned['dataset_id']}", headers=auth).status_code == 200
        assert client.get(f"/v1/sweeps/{owned['sweep_id']}", headers=auth).get_json()["status"] == "running"
    finally:
        client.post(f"/v1/sweeps/{owned['sweep_id']}/cancel", headers=auth)
        client.post(f"/v1/jobs/{owned['job_id']}/cancel", headers=auth)
