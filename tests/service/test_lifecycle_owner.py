"""Only trainyard/lifecycle.py writes a job's status: every other module of trainyard/, service/ and workers/
is read statically, and any status write found outside the lifecycle fails this test."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.conftest import ROOT
from trainyard.db.models import JOB_STATUSES

OWNER = Path("trainyard/lifecycle.py")
PACKAGES = ("trainyard", "service", "workers")
# A sweep has a status of its own (running, completed, failed, cancelled: trainyard/db/sweeps.py); the sweep
# controller owns it. Its writes there are made through a `Sweep` row named `sweep`, or a `Sweep(...)` call.
SWEEP_WRITES = {Path("trainyard/sweeps/controller.py"): ("sweep", "Sweep")}
# Calls whose `status=` is a row's status: a Job's constructor and UPDATE/INSERT `.values(...)` (not `dict.update`).
ROW_CALLS = {"Job", "values"}


def _name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


# The lifecycle's names for the statuses (`lifecycle.FAILED`...), which a status write elsewhere could use.
STATUS_NAMES = {status.upper() for status in JOB_STATUSES}


def _is_job_status(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return node.value in JOB_STATUSES
    return _name(node) in STATUS_NAMES


def _targets(node: ast.AST) -> list[ast.AST]:
    if isinstance(node, ast.Assign):
        targets = list(node.targets)
    elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
        targets = [node.target]
    else:
        return []
    flat: list[ast.AST] = []
    while targets:
        target = targets.pop()
        if isinstance(target, (ast.Tuple, ast.List)):
            targets.extend(target.elts)
        else:
            flat.append(target)
    return flat


def status_writes(source: str, path: Path = Path("<source>")) -> list[str]:
    """Every place in `source` that writes a job's status: `x.status = ...` (tuple targets too),
    `setattr(x, "status", ...)`, `status=` passed to `Job(...)` or `.values(...)`, any
    `status=` or `{"status": ...}` holding a job status literal."""
    allowed = SWEEP_WRITES.get(path, ())
    found: list[str] = []
    for node in ast.walk(ast.parse(source, str(path))):
        where = f"{path}:{getattr(node, 'lineno', '?')}"
        for target in _targets(node):
            if isinstance(target, ast.Attribute) and target.attr == "status" and _name(target.value) not in allowed:
                found.append(f"{where}: assigns .status")
        if isinstance(node, ast.Call):
            func = _name(node.func)
            if (func == "setattr" and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)
                    and node.args[1].value == "status"):
                found.append(f"{where}: setattr(..., 'status', ...)")
            for kw in node.keywords:
                if kw.arg == "status" and func not in allowed and (func in ROW_CALLS or _is_job_status(kw.value)):
                    found.append(f"{where}: {func}(status=...)")
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if isinstance(key, ast.Constant) and key.value == "status" and _is_job_status(value):
                    found.append(f"{where}: {{'status': {ast.unparse(value)}}}")
    return found


def test_only_the_lifecycle_writes_a_jobs_status() -> None:
    found = [
        hit
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        if path.relative_to(ROOT) != OWNER
        for hit in status_writes(path.read_text(), path.relative_to(ROOT))
    ]
    assert not found, "job status written outside trainyard/lifecycle.py:\n" + "\n".join(found)


def test_the_lifecycle_itself_is_seen_writing_statuses() -> None:
    # The scan reads the real owner too: if it found nothing there, it would find nothing anywhere.
    hits = status_writes((ROOT / OWNER).read_text(), OWNER)
    assert len(hits) >= 8, hits


@pytest.mark.parametrize("source", [
    "job.status = 'cancelled'",
    "job.status, job.stop_reason = 'cancelled', 'cancelled'",
    "row.status = new_status",
    "setattr(job, 'status', value)",
    "s.execute(update(Job).where(Job.id == i).values(status='queued'))",
    "s.execute(update(Job).values(status=some_status))",
    "Job(tenant_id=t, status=status, spec={})",
    "s.execute(update(Job).values(**{'status': 'failed', 'error_code': 'x'}))",
    "end = {'status': 'succeeded'}",
    "end = {'status': lifecycle.FAILED, 'error_code': code}",
    "def f(s):\n    s.add(make(status='running'))",
])
def test_the_scan_finds_each_way_of_writing_a_status(source: str) -> None:
    assert status_writes(source), source


@pytest.mark.parametrize("source", [
    "if job.status == 'queued':\n    pass",
    "select(Job).where(Job.status.in_(('queued', 'running')))",
    "Response(body, status=304)",
    "jsonify({'status': 'ok'})",
    "body = {'status': job.status}",
])
def test_the_scan_leaves_reads_and_other_statuses_alone(source: str) -> None:
    assert not status_writes(source), source


def test_sweep_writes_are_allowed_only_in_the_sweep_controller() -> None:
    source = "sweep.status = 'completed'\nSweep(tenant_id=t, status='running')"
    assert not status_writes(source, Path("trainyard/sweeps/controller.py"))
    assert len(status_writes(source, Path("service/api/sweeps.py"))) == 2
    # In the controller too, a job's status stays the lifecycle's.
    assert status_writes("job.status = 'cancelled'", Path("trainyard/sweeps/controller.py"))
