"""docker-compose.yml cannot run here (no Docker engine), so keep it honest: every service it builds runs
one of the bin/ scripts that `make run` and this suite start for real, with settings the code accepts."""
from __future__ import annotations

from pathlib import Path

import requests
import yaml

from service.settings import Settings
from tests.conftest import ROOT, Proc, free_port, wait_until


def test_compose_runs_the_scripts_the_tests_run() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    commands = {name: svc["command"] for name, svc in services.items() if "build" in svc}
    assert commands == {"migrate": ["bin/migrate"], "api": ["bin/api"], "worker": ["bin/worker"],
                        "flower": ["bin/flower"]}
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


def test_flower_as_compose_runs_it_serves_its_dashboard_on_the_broker(
        service_env: dict[str, str], tmp_path: Path) -> None:
    """bin/flower (the compose service's command) against the suite's Redis broker: its page answers."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    flower = compose["services"]["flower"]
    assert flower["depends_on"] == {"redis": {"condition": "service_healthy"}}
    assert flower["environment"]["TRAINYARD_FLOWER_PORT"] == "5555"
    port = free_port()
    proc = Proc([str(ROOT / "bin" / "flower")], {**service_env, "TRAINYARD_FLOWER_PORT": str(port)},
                tmp_path / "flower.log")
    try:
        def up() -> bool:
            assert proc.alive(), proc.output()[-3000:]
            try:
                return requests.get(f"http://127.0.0.1:{port}/healthcheck", timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_until(up, 60, 0.3, "flower to answer")
        page = requests.get(f"http://127.0.0.1:{port}/", timeout=10)
        assert page.status_code == 200 and "Flower" in page.text
    finally:
        proc.stop()
