"""`GET /v1/usage` reads indexes only on Postgres, never a table sequentially, and its numbers are right.

Ten tenants' jobs are written straight into the session database (one small tenant among larger ones, as
on a shared server), with checkpoints, exports, backups, forks' weights and data sets, then analysed; the
very statements the endpoint runs (`trainyard.usage.usage_queries`) are explained. No plan may read a
table sequentially, and finished jobs' seconds come from `ix_jobs_tenant_finished`. The endpoint's answer
for the small tenant is checked against sums worked out here from what was written. The plans are printed
(`pytest -s`) for the record.
"""
from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import delete, insert, text

from tests.conftest import tiny_spec
from trainyard.db.exports import JobExport
from trainyard.db.models import Artifact, Checkpoint, Dataset, Job, Tenant, new_id
from trainyard.spec import validate_spec
from trainyard.usage import usage_queries

SMALL_JOBS = 400
OTHER_TENANTS, OTHER_JOBS = 9, 1000
NOW = datetime(2026, 12, 6, 12, 0, tzinfo=timezone.utc)
STATUSES = ("succeeded", "failed", "cancelled", "queued", "running")


@pytest.fixture(scope="module")
def population(app: Any) -> Any:
    """(the small tenant's id, the sums written for it)."""
    db = app.extensions["trainyard"].db
    rng = random.Random(8)
    spec = validate_spec(tiny_spec())
    tenants = [new_id("tn") for _ in range(OTHER_TENANTS + 1)]
    jobs, checkpoints, exports, artifacts, datasets = [], [], [], [], []
    expected: dict[str, Any] = {}
    for t, tenant in enumerate(tenants):
        sums = {"checkpoints": 0, "exports": 0, "resume_backups": 0, "initial_weights": 0, "datasets": 0,
                "seconds": 0.0, "month": 0.0, "statuses": {s: 0 for s in STATUSES}}
        for i in range(SMALL_JOBS if t == 0 else OTHER_JOBS):
            job_id = new_id("job")
            status = STATUSES[i % 5]
            sums["statuses"][status] += 1
            # Started between 60 days ago and now, for up to an hour: some cross the month's first instant.
            started = NOW - timedelta(days=rng.uniform(0, 60)) if status != "queued" else None
            finished = None
            if status in ("succeeded", "failed", "cancelled"):
                finished = min(started + timedelta(seconds=rng.uniform(1, 3600)), NOW)
            job = {"id": job_id, "tenant_id": tenant, "name": f"run-{i}", "status": status, "spec": spec,
                   "created_at": (started or NOW) - timedelta(seconds=5), "epochs": 3,
                   "started_at": started, "finished_at": finished, "backup_key": None,
                   "initial_weights_key": None,
                   "error_code": "training_error" if status == "failed" else None,
                   "error_message": "Training stopped with an error: test" if status == "failed" else None,
                   # Marked sent, a day from now: a session worker's reaper, which re-sends queued jobs the
                   # broker lost, leaves these rows alone while they exist.
                   "enqueued_at": datetime.now(timezone.utc) + timedelta(days=1) if status == "queued" else None}
            month_start = NOW.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
            end = finished or (NOW if status == "running" else None)
            if started is not None and end is not None:
                sums["seconds"] += (end - started).total_seconds()
                if end > month_start:
                    sums["month"] += (end - max(started, month_start)).total_seconds()
            for epoch in range(1, 1 + i % 3):
                size = rng.randrange(1000, 9000)
                checkpoints.append({"job_id": job_id, "epoch": epoch, "monitor": "val_loss", "value": 1.0 / epoch,
                                    "artifact_key": f"jobs/{job_id}/checkpoints/epoch-{epoch:04d}.a1.keras",
                                    "size_bytes": size, "sha256": "0" * 64, "is_best": epoch == i % 3})
                sums["checkpoints"] += size
            if status == "succeeded":
                size = rng.randrange(1000, 9000)
                exports.append({"job_id": job_id, "format": "savedmodel", "epoch": 1, "size_bytes": size,
                                "artifact_key": f"jobs/{job_id}/exports/epoch-0001.a1.savedmodel.tar.gz",
                                "sha256": "0" * 64})
                sums["exports"] += size
            for column, kind, key in (("backup_key", "resume_backups", f"jobs/{job_id}/backups/epoch-0002.a1.weights.h5"),
                                      ("initial_weights_key", "initial_weights", f"jobs/{job_id}/initial/epoch-0001.keras")):
                if rng.random() < 0.3:
                    size = rng.randrange(1000, 9000)
                    job[column] = key
                    artifacts.append({"key": key, "size_bytes": size, "sha256": "0" * 64, "chunk_size": 0,
                                      "location": "object"})
                    sums[kind] += size
            jobs.append(job)
        for d in range(3 if t == 0 else 30):
            size = rng.randrange(10_000, 90_000)
            datasets.append({"id": new_id("ds"), "tenant_id": tenant, "name": f"d{d}.npz", "format": "npz",
                             "artifact_key": "datasets/x", "size_bytes": size, "sha256": "0" * 64, "info": {},
                             "created_at": NOW})
            sums["datasets"] += size
        expected[tenant] = sums
    with db.session() as s:
        s.execute(insert(Tenant), [{"id": t, "name": f"usage-{t}"} for t in tenants])
        s.execute(insert(Job), jobs)
        s.execute(insert(Checkpoint), checkpoints)
        s.execute(insert(JobExport), exports)
        s.execute(insert(Artifact), artifacts)
        s.execute(insert(Dataset), datasets)
    with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in ("jobs", "checkpoints", "job_exports", "artifacts", "datasets"):
            conn.execute(text(f"VACUUM ANALYZE {table}"))
    yield tenants[0], expected[tenants[0]]
    with db.session() as s:
        s.execute(delete(Artifact).where(Artifact.key.in_([a["key"] for a in artifacts])))
        s.execute(delete(Tenant).where(Tenant.id.in_(tenants)))


def test_usage_reads_indexes_only_and_adds_up(app: Any, population: Any) -> None:
    # One test: after each test without a worker, the suite cancels the jobs left queued (conftest.py).
    tenant, sums = population
    db = app.extensions["trainyard"].db
    for stmt in usage_queries(tenant, NOW, sqlite=False):
        compiled = stmt.compile(db.engine, compile_kwargs={"literal_binds": True})
        with db.engine.connect() as conn:
            plan = "\n".join(r[0] for r in conn.execute(text(f"EXPLAIN {compiled}")))
        print(f"\n{plan}")
        assert "Seq Scan" not in plan, plan
        if "finished_at" in str(compiled):
            assert "ix_jobs_tenant_finished" in plan, plan

    from service.auth import create_token
    from trainyard.usage import tenant_usage

    with db.session() as s:
        token = create_token(s, f"usage-{tenant}").token
    with db.read_session() as s:
        found = tenant_usage(s, tenant, NOW)
    kinds = ("checkpoints", "exports", "resume_backups", "initial_weights", "datasets")
    assert found["stored_bytes"] == {"total": sum(sums[k] for k in kinds), **{k: sums[k] for k in kinds}}
    assert found["jobs"] == {"total": SMALL_JOBS, **sums["statuses"]}
    assert found["training_seconds"]["total"] == pytest.approx(sums["seconds"], abs=0.01)
    assert found["training_seconds"]["this_month"] == pytest.approx(sums["month"], abs=0.01)
    assert 0 < found["training_seconds"]["this_month"] < found["training_seconds"]["total"]
    # Through the API (at its own now: the running jobs' seconds have grown since NOW, nothing else).
    body = app.test_client().get("/v1/usage", headers={"Authorization": f"Bearer {token}"}).get_json()
    assert body["stored_bytes"] == found["stored_bytes"] and body["jobs"] == found["jobs"]
    assert body["training_seconds"]["total"] > found["training_seconds"]["total"]
