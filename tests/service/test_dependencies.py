"""Every dependency pyproject.toml declares is used: imported by the code, tests or benchmarks, or run by a
script. A package nothing uses any more (s3fs was one) fails here until it is removed with its docs."""
from __future__ import annotations

import ast
import re
import tomllib

from tests.conftest import ROOT

# Distribution name -> how it is used: an imported module, or a command a script or test runs.
USES = {
    "flask": "import flask", "marshmallow": "import marshmallow", "sqlalchemy": "import sqlalchemy",
    "alembic": "import alembic", "psycopg": "import psycopg", "celery": "import celery", "kombu": "import kombu",
    "gunicorn": "run bin/api", "numpy": "import numpy", "fsspec": "import fsspec", "botocore": "import botocore",
    "scikit-learn": "import sklearn", "keras": "import keras", "tensorflow-cpu": "import tensorflow",
    "tensorflow": "import tensorflow", "pyyaml": "import yaml", "click": "import click",
    "requests": "import requests", "limits": "import limits",
    # bin/api starts gunicorn with gevent workers (--worker-class gevent).
    "gevent": "run bin/api", "prometheus-client": "import prometheus_client", "flower": "run bin/flower",
    "google-crc32c": "import google_crc32c",
    # Keras' model.export(format="onnx") imports both in workers/trainer/export.py's ONNX export.
    "tf2onnx": "run workers/trainer/export.py", "onnx": "run workers/trainer/export.py",
    "onnxruntime": "import onnxruntime",
    # Sweeps' samplers and pruners; Optuna's CmaEsSampler imports cmaes when a sweep asks for "cmaes".
    "optuna": "import optuna", "cmaes": "run trainyard/sweeps/study.py",
    "pytest": "import pytest", "openapi-core": "import openapi_core",
    "openapi-spec-validator": "import openapi_spec_validator", "schemathesis": "import schemathesis",
    "tensorboard": "import tensorboard", "playwright": "import playwright",
    # tests/s3server.py runs `python -m moto.server`.
    "moto": "run tests/s3server.py", "hypothesis": "import hypothesis",
    # tests/client/test_generated_client.py runs `python -m openapi_python_client generate`.
    "openapi-python-client": "run tests/client/test_generated_client.py",
    # The Makefile's `test` target runs pytest with -n (and names pytest-xdist in its comment).
    "pytest-xdist": "run Makefile",
}


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = project["dependencies"] + [r for group in project["optional-dependencies"].values() for r in group]
    return {re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}


def _imported() -> set[str]:
    found: set[str] = set()
    for package in ("trainyard", "service", "workers", "client", "tests", "bench", "migrations"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    found.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    found.add(node.module.split(".")[0])
    return found


def test_every_declared_dependency_is_used() -> None:
    declared = _declared()
    assert declared - set(USES) == set(), "say in USES how a new dependency is used"
    imported = _imported()
    unused = []
    for name in sorted(declared):
        how, what = USES[name].split(" ", 1)
        if how == "import" and what not in imported:
            unused.append(name)
        elif how == "run" and name not in (ROOT / what).read_text():
            unused.append(name)
    assert unused == []
