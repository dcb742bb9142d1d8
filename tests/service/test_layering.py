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



def test_the_name_catalogue_loads_only_the_standard_library() -> None:
    # The API validates specs with it and the pure-Keras trainer builds losses and metrics from it: it must
    # stay importable anywhere, so it may bring nothing but the standard library along.
    env = subprocess_env({})
    before = _modules_after("", env)
    loaded = _modules_after("import trainyard.names", env) - before
    assert "trainyard.names" in loaded
    outside = {m for m in loaded if m.split(".")[0] not in sys.stdlib_module_names and m.split(".")[0] != "trainyard"}
    assert not outside, sorted(outside)
    assert {m for m in loaded if m.startswith("trainyard")} == {"trainyard", "trainyard.names"}

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


def test_every_service_module_imports_first_in_a_fresh_process() -> None:
    """No import cycle in service/ that only works in one order: each module is imported first, with every
    service module forgotten before (the third-party packages stay loaded, so one process does it)."""
    code = (
        "import importlib, pkgutil, sys, traceback, service\n"
        "names = ['service'] + [m.name for m in pkgutil.walk_packages(service.__path__, 'service.')]\n"
        "failed = []\n"
        "for name in names:\n"
        "    for loaded in [m for m in sys.modules if m == 'service' or m.startswith('service.')]:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception:\n"
        "        failed.append(name + ': ' + traceback.format_exc(limit=-3))\n"
        "print(len(names))\n"
        "sys.exit('\\n'.join(failed) or None)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=subprocess_env({}), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout) >= 20  # every module was found and imported


def test_the_app_imports_the_api_never_the_reverse() -> None:
    bad = sorted(f"{path.relative_to(ROOT)}: {name}" for path in (ROOT / "service").rglob("*.py")
                 if path.name != "app.py" and path != ROOT / "service" / "__init__.py"
                 for name in _imports(path) if name == "service.app")
    assert not bad, bad


def test_every_blueprint_is_in_the_one_registration_list() -> None:
    import importlib
    import pkgutil

    from flask import Blueprint

    import service.api
    from service.api import BLUEPRINTS

    found = []
    names = [m.name for m in pkgutil.walk_packages(service.api.__path__, "service.api.")] + ["service.web"]
    for name in names:
        module = importlib.import_module(name)
        found += [value for value in vars(module).values() if isinstance(value, Blueprint)]
    assert found and set(found) == set(BLUEPRINTS) and len(BLUEPRINTS) == len(set(BLUEPRINTS))


def test_tenant_scoped_lookups_go_through_load_owned() -> None:
    """Only service/api/common.py (`load_owned`, `load_owned_row`) decides that a row is another tenant's."""
    bad = sorted(str(path.relative_to(ROOT)) for path in (ROOT / "service").rglob("*.py")
                 if path.name != "common.py" and "tenant_id != " in path.read_text())
    assert not bad, bad


def test_what_the_api_uses_of_optuna_imports_no_scikit_learn() -> None:
    # The API rebuilds sweeps' studies (Optuna) but leaves importances (optuna.importance imports
    # scikit-learn) to the workers: trainyard/sweeps/controller.py refresh_importance.
    modules = _modules_after("import service.api.sweeps, trainyard.sweeps.study", subprocess_env({}))
    assert "optuna" in modules
    assert not {m for m in modules if m.split(".")[0] in ("sklearn", "tensorflow", "keras")}
