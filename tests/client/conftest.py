"""Fixtures for the client and CLI tests: the real API (gunicorn) and worker from tests/conftest.py, a
`Trainyard` client for them, a CliRunner bound to them through environment variables, and one small job
that the read-only tests share."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
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
