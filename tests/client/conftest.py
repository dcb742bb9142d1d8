"""Fixtures for the client and CLI tests: the real API (gunicorn) and worker from tests/conftest.py, a
`Trainyard` client for them, a CliRunner bound to them through environment variables, and one small job
that the read-only tests share."""
from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner, Result

from client import Trainyard
from client.cli import main
from tests.conftest import tiny_spec

RunCli = Callable[..., Result]


def iris_spec(**overrides: Any) -> dict[str, Any]:
    """Iris with a validation split, so every epoch logs val_loss; a few seconds end to end."""
    return tiny_spec(**{"name": "cli-iris", "dataset": {"id": "builtin:iris", "validation_split": 0.2,
                                                         "normalize": "standardize"},
                        "training": {"epochs": 4, "batch_size": 16, "seed": 1}, **overrides})


def write_spec(directory: Path, spec: dict[str, Any], name: str = "spec.json") -> Path:
    path = directory / name
    path.write_text(json.dumps(spec))
    return path


@pytest.fixture(scope="session")
def cli_env(api_url: str, token: str) -> dict[str, str]:
    return {"TRAINYARD_URL": api_url, "TRAINYARD_TOKEN": token}


@pytest.fixture(scope="session")
def run_cli(cli_env: dict[str, str]) -> RunCli:
    """Invoke `trainyard ...` in-process; `env=` overrides (a value of None unsets the variable)."""

    def run(*args: str, env: dict[str, str | None] | None = None, input: str | None = None) -> Result:
        return CliRunner().invoke(main, list(args), env={**cli_env, **(env or {})}, input=input,
                                  catch_exceptions=False)

    return run


@pytest.fixture(scope="session")
def ty(api_url: str, token: str) -> Trainyard:
    return Trainyard(api_url, token, timeout=10)


@pytest.fixture(scope="session")
def submitted_with_wait(run_cli: RunCli, worker: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Result, str]:
    """`trainyard submit spec.json --wait` on a 4-epoch iris job: (the CLI result, the job id)."""
    spec = write_spec(tmp_path_factory.mktemp("spec"), iris_spec())
    result = run_cli("submit", str(spec), "--wait", "--poll", "0.2")
    first = result.stdout.splitlines()[0]
    assert first.startswith("submitted job_"), result.output
    return result, first.split()[1]


@pytest.fixture(scope="session")
def done_job(ty: Trainyard, submitted_with_wait: tuple[Result, str]) -> dict[str, Any]:
    return ty.get(submitted_with_wait[1])


@pytest.fixture()
def server_without_events(api_url: str) -> Iterator[str]:
    """A real HTTP proxy to the API that answers 404 (as the API does for unknown paths) for /events,
    like a server from before the endpoint existed."""

    class Proxy(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path.split("?")[0].endswith("/events"):
                body = b'{"type":"https://trainyard.dev/problems/not_found","title":"Not found","status":404}'
                self.send_response(404)
                self.send_header("Content-Type", "application/problem+json")
            else:
                upstream = requests.get(api_url + self.path, headers={"Authorization": self.headers["Authorization"]},
                                        timeout=30)
                body = upstream.content
                self.send_response(upstream.status_code)
                self.send_header("Content-Type", upstream.headers["Content-Type"])
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
