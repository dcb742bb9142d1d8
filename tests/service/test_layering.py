"""The architecture's import rules, checked in fresh processes: the API stays small and fast to start."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

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


def test_the_domain_package_imports_no_web_worker_or_tensorflow_code() -> None:
    code = "import pkgutil, importlib, trainyard\n" \
           "[importlib.import_module(m.name) for m in pkgutil.walk_packages(trainyard.__path__, 'trainyard.')]\n"
    modules = _modules_after(code, subprocess_env({}))
    assert "trainyard.lifecycle" in modules or "trainyard.db" in modules
    assert not {m for m in modules if m.split(".")[0] in ("flask", "tensorflow", "keras", "service", "workers")}


@pytest.mark.parametrize("module", ["trainyard.stop_reasons"])
def test_what_the_trainer_reads_of_the_domain_imports_only_the_standard_library(module: str) -> None:
    env = subprocess_env({})
    modules = _modules_after(f"import {module}", env) - _modules_after("pass", env)  # minus what site loads
    assert module in modules
    third_party = {m for m in modules
                   if m.split(".")[0] not in sys.stdlib_module_names and m.split(".")[0] != "trainyard"}
    assert not third_party, sorted(third_party)
    # The package's __init__ comes along: it must stay free of imports.
    assert {m for m in modules if m.startswith("trainyard")} == {"trainyard", module}


def test_the_worker_process_imports_no_flask_or_api_code() -> None:
    modules = _modules_after("import workers.tasks, workers.celery_app", subprocess_env({}))
    assert "celery" in modules and "trainyard.db" in modules
    assert not {m for m in modules if m.split(".")[0] in ("flask", "werkzeug", "service")}


# What each package may never import, checked statically too, so an import inside a function counts.
FORBIDDEN = {
    "trainyard": ("flask", "werkzeug", "tensorflow", "keras", "service", "workers"),
    "service": ("tensorflow", "keras", "workers"),
    "workers": ("flask", "werkzeug", "service"),
    "workers/trainer": ("flask", "werkzeug", "celery", "kombu", "sqlalchemy", "psycopg", "requests", "redis",
                        "service", "trainyard"),
}
# The trainer reads the standard-library catalogue of Keras names and the stop reasons, nothing else of the
# domain (both import only the standard library: checked below).
ALLOWED = {"workers/trainer": ("trainyard.names", "trainyard.stop_reasons")}


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_module_of_a_package_imports_what_its_layer_forbids(package: str) -> None:
    allowed = ALLOWED.get(package, ())
    bad = sorted(
        f"{path.relative_to(ROOT)}: {name}"
        for path in (ROOT / package).rglob("*.py")
        for name in _imports(path)
        if name.split(".")[0] in FORBIDDEN[package] and not name.startswith(allowed or ("\0",))
    )
    assert not bad, bad
