"""The architecture's import rules, checked in fresh processes: the API stays small and fast to start."""
from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT, subprocess_env


def _modules_after(code: str, env: dict[str, str]) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print(' '.join(sorted(sys.modules)))"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=True)
    return set(out.stdout.split())


def test_api_process_never_imports_tensorflow_or_keras(service_env: dict[str, str]) -> None:
    code = (
        "from service import create_app\n"
        "app = create_app()\n"
        "c = app.test_client()\n"
        "assert c.get('/healthz').status_code == 200\n"
        "assert c.post('/v1/jobs', json={}).status_code == 401\n"
    )
    modules = _modules_after(code, service_env)
    assert "flask" in modules
    assert not {m for m in modules if m.split(".")[0] in ("tensorflow", "keras", "sklearn", "workers")}


def test_trainer_imports_no_web_queue_or_database_code() -> None:
    modules = _modules_after("import workers.trainer", subprocess_env({}))
    assert "keras" in modules
    assert not {m for m in modules if m.split(".")[0] in ("flask", "celery", "sqlalchemy", "service", "kombu")}
