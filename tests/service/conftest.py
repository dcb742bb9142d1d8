"""A second API (bin/api) for tests that need other settings than the suite's: JSON logs and a half-second
keep-alive on event streams. Started once, shared by tests/service/test_events.py and test_operations.py."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.conftest import ROOT, Proc, free_port, wait_until


@pytest.fixture(scope="session")
def tuned_api(service_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Proc]]:
    port = free_port()
    env = {**service_env, "TRAINYARD_PORT": str(port), "TRAINYARD_API_WORKERS": "1",
           "TRAINYARD_LOG_FORMAT": "json", "TRAINYARD_EVENTS_KEEPALIVE_SECONDS": "0.5"}
    proc = Proc([str(ROOT / "bin" / "api")], env, tmp_path_factory.mktemp("tuned-api") / "api.log")
    url = f"http://127.0.0.1:{port}"

    def up() -> Any:
        assert proc.alive(), proc.output()[-3000:]
        try:
            return requests.get(url + "/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    wait_until(up, 60, 0.2, "the second gunicorn")
    yield url, proc
    proc.stop()
