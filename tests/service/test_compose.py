"""docker-compose.yml cannot run here (no Docker engine), so keep it honest: every service it builds runs
one of the bin/ scripts that `make run` and this suite start for real, with settings the code accepts."""
from __future__ import annotations


import yaml

from service.settings import Settings
from tests.conftest import ROOT


def test_compose_runs_the_scripts_the_tests_run() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    commands = {name: svc["command"] for name, svc in services.items() if "build" in svc}
    assert commands == {"migrate": ["bin/migrate"], "api": ["bin/api"], "worker": ["bin/worker"]}
    for name in commands:
        script = ROOT / commands[name][0]
        assert script.exists() and script.stat().st_mode & 0o111, script
        settings = Settings.from_env({k: str(v) for k, v in services[name]["environment"].items()})
        assert settings.database_url.startswith("postgresql+psycopg://")
        assert settings.broker_url.startswith("redis://")
    gpu = services["worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]


def test_dockerfile_copies_what_the_scripts_need() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    for needed in ("service", "workers", "bin", "migrations", "alembic.ini", "openapi.yaml"):
        assert needed in dockerfile
