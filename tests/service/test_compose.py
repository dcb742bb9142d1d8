"""docker-compose.yml cannot run here (no Docker engine), so keep it honest: every service it builds runs
one of the bin/ scripts that `make run` and this suite start for real, with settings the code accepts.
The same goes for docker-compose.worker.yml, the GPU machines of the two-machine layout: its workers reach
the API machine's Postgres, Redis and object store, and serve only classes the API accepts."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import requests
import yaml

from trainyard.resources import worker_queues
from trainyard.settings import Settings
from tests.conftest import ROOT, Proc, free_port, start_api, wait_until

_VAR = re.compile(r"\$\{(\w+):-([^}]*)\}")


def _compose(name: str, **variables: str) -> dict[str, Any]:
    """The file as `docker compose` reads it with these variables set (others take their defaults)."""
    text = _VAR.sub(lambda m: variables.get(m.group(1), m.group(2)), (ROOT / name).read_text())
    return yaml.safe_load(text)


def _env(service: dict[str, Any]) -> dict[str, str]:
    return {k: str(v) for k, v in service["environment"].items()}


def test_compose_runs_the_scripts_the_tests_run() -> None:
    services = _compose("docker-compose.yml")["services"]
    commands = {name: svc["command"] for name, svc in services.items() if "build" in svc}
    assert commands == {"migrate": ["bin/migrate"], "api": ["bin/api"], "worker": ["bin/worker"],
                        "flower": ["bin/flower"]}
    for name in commands:
        script = ROOT / commands[name][0]
        assert script.exists() and script.stat().st_mode & 0o111, script
        settings = Settings.from_env(_env(services[name]))
        assert settings.database_url.startswith("postgresql+psycopg://")
        assert settings.broker_url.startswith("redis://")
        assert settings.artifact_url.startswith("s3://") and settings.s3_endpoint_url == "http://minio:9000"
    gpu = services["worker"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]
    # The API machine publishes what GPU machines connect to.
    for svc, port in (("postgres", "5432"), ("redis", "6379"), ("minio", "9000"), ("api", "8000")):
        assert any(str(p).startswith(port + ":") for p in services[svc]["ports"]), svc


def test_gpu_machines_reach_the_api_machine_and_serve_accepted_classes() -> None:
    api_box = _compose("docker-compose.yml")["services"]
    gpu_box = _compose("docker-compose.worker.yml", TRAINYARD_API_HOST="10.0.0.5")["services"]
    api = Settings.from_env(_env(api_box["api"]))
    served: set[str] = set(Settings.from_env(_env(api_box["worker"])).worker_classes)
    for name, svc in gpu_box.items():
        assert svc["command"] == ["bin/worker"], name
        env = _env(svc)
        settings = Settings.from_env(env)
        assert "@10.0.0.5:5432/" in settings.database_url and settings.broker_url == "redis://10.0.0.5:6379/0"
        assert settings.artifact_url == api.artifact_url and settings.s3_endpoint_url == "http://10.0.0.5:9000"
        assert settings.artifact_db_max_bytes == api.artifact_db_max_bytes
        assert len(env["CUDA_VISIBLE_DEVICES"].split(",")) == settings.worker_gpus
        devices = svc["deploy"]["resources"]["reservations"]["devices"][0]
        assert len(devices["device_ids"]) == settings.worker_gpus
        assert set(settings.worker_classes) <= set(api.spec_limits.resource_classes), name
        served |= set(settings.worker_classes)
        # The queues workers.celery_app selects for this service's classes (a worker started with such
        # classes takes jobs from them: tests/service/test_routing.py).
        assert worker_queues(settings.worker_classes)[:-1] == [f"trainyard.{c}" for c in settings.worker_classes]
    # Every class the API accepts has a worker: nothing accepted waits forever.
    assert served == set(api.spec_limits.resource_classes)


def test_dockerfile_copies_what_the_scripts_need() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    for needed in ("service", "workers", "bin", "migrations", "alembic.ini", "openapi.yaml"):
        assert needed in dockerfile
    assert "TENSORFLOW_GPU" in dockerfile


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


def test_the_api_serves_no_control_socket_in_the_users_home(service_env: dict[str, str], tmp_path: Path) -> None:
    """gunicorn's control socket lives at one path per user (~/.gunicorn/gunicorn.ctl): APIs on one host
    took each other's over. bin/api turns it off (service/gunicorn_conf.py)."""
    env = {k: v for k, v in service_env.items() if k != "XDG_RUNTIME_DIR"}
    proc, url = start_api({**env, "HOME": str(tmp_path)}, tmp_path / "api.log")
    try:
        assert requests.get(f"{url}/healthz", timeout=10).status_code == 200
        assert not (tmp_path / ".gunicorn").exists(), proc.output()[-2000:]
        assert "Control socket listening" not in proc.output()
    finally:
        proc.stop()
