"""Retention and usage (issue 18, item 8), through the API and real workers on a folder store.

A job whose monitored value improves over several epochs keeps only its best checkpoint once it succeeds
(the default, `TRAINYARD_KEEP_CHECKPOINTS=best`): the other checkpoints' rows, their artifact records and
their files are gone, and so is the resume backup; forks that needed them get the 409 naming what was kept.
A worker started with `all` keeps every checkpoint and the backup. `GET /v1/usage` then adds up to exactly
the recorded sizes of the tenant's artifacts, counts its jobs by status and sums their training seconds
from the job rows; another tenant sees only its own. Responses are checked against openapi.yaml.

The module runs its own database, broker (REDIS_DB + 1) and workers, one after the other: each worker's
setting decides what the jobs it trains keep.
"""
from __future__ import annotations

import io
import os
import secrets
import subprocess
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
import redis
from sqlalchemy import select

from tests.conftest import PG_ADMIN_DSN, PG_URL_BASE, ROOT, redis_db_url, start_worker, subprocess_env, wait_until
from tests.service.test_faults import digits_spec
from tests.service.test_openapi import FINAL, Api, load_openapi
from trainyard.db.exports import JobExport
from trainyard.names import EXPORT_FORMATS
from trainyard.db.models import Artifact, Checkpoint, Job

EPOCHS = 4


class Stack:
    def __init__(self, env: dict[str, str], logs: Path) -> None:
        from service import create_app
        from service.auth import create_token
        from trainyard.settings import Settings

        self.env, self.logs = env, logs
        self.settings = Settings.from_env(env)
        self.app = create_app(self.settings)
        self.svc = self.app.extensions["trainyard"]
        self.artifacts = Path(env["TRAINYARD_ARTIFACT_URL"].removeprefix("file://"))
        openapi = load_openapi()
        with self.svc.db.session() as s:
            self.alice = Api(self.app.test_client(), openapi,
                             {"Authorization": f"Bearer {create_token(s, 'alice').token}"})
            self.bob = Api(self.app.test_client(), openapi,
                           {"Authorization": f"Bearer {create_token(s, 'bob').token}"})

    def train(self, keep: str | None, *specs: dict[str, Any]) -> list[dict[str, Any]]:
        """Submit the specs as alice, train them on a worker started with TRAINYARD_KEEP_CHECKPOINTS=`keep`
        (unset: the default), stop the worker; the jobs as they ended."""
        ids = [self.alice("POST", "/v1/jobs", 201, json_body=spec).get_json()["id"] for spec in specs]
        env = dict(self.env) if keep is None else {**self.env, "TRAINYARD_KEEP_CHECKPOINTS": keep}
        worker = start_worker(env, self.logs / f"worker-{keep or 'default'}.log", self.settings)
        try:
            wait_until(lambda: all(self.job(i)["status"] in FINAL for i in ids), 300, 0.5, f"jobs {ids} to end")
        finally:
            # A warm shutdown: the solo pool finishes the delivery under way, pruning included.
            worker.stop()
        return [self.job(i) for i in ids]

    def job(self, job_id: str) -> dict[str, Any]:
        return self.alice("GET", f"/v1/jobs/{job_id}", 200).get_json()

    def checkpoints(self, job_id: str) -> list[dict[str, Any]]:
        return self.alice("GET", f"/v1/jobs/{job_id}/checkpoints", 200).get_json()["checkpoints"]

    def records(self, prefix: str) -> dict[str, int]:
        """Artifact records (key: recorded size) under a key prefix."""
        with self.svc.db.session() as s:
            return dict(s.execute(select(Artifact.key, Artifact.size_bytes)
                                  .where(Artifact.key.startswith(prefix, autoescape=True))).all())

    def files(self, job_id: str, folder: str) -> list[str]:
        path = self.artifacts / "jobs" / job_id / folder
        return sorted(p.name for p in path.iterdir()) if path.exists() else []


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    name = f"trainyard_retention_{os.getpid()}_{secrets.token_hex(3)}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    broker = redis_db_url(1)
    redis.Redis.from_url(broker).flushdb()
    var = tmp_path_factory.mktemp("retention-var")
    env = subprocess_env({
        "TRAINYARD_DATABASE_URL": f"{PG_URL_BASE}/{name}",
        "TRAINYARD_BROKER_URL": broker,
        "TRAINYARD_VAR_DIR": str(var),
        "TRAINYARD_ARTIFACT_URL": f"file://{var}/artifacts",
        "TRAINYARD_WORKER_HEARTBEAT_SECONDS": "1",
        # Every export format, as in production: retention keeps them all (the suite's default is none).
        "TRAINYARD_EXPORT_FORMATS": ",".join(EXPORT_FORMATS),
    })
    subprocess.run([str(ROOT / "bin" / "migrate")], env=env, check=True, cwd=ROOT)
    stack = Stack(env, tmp_path_factory.mktemp("retention-logs"))
    try:
        yield stack
    finally:
        stack.app.extensions["trainyard_events"].close()
        stack.svc.db.dispose()
        redis.Redis.from_url(broker).flushdb()
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _improvements(stack: Stack, job_id: str) -> list[int]:
    """The epochs whose val_loss improved on every earlier one: each wrote a checkpoint."""
    rows = stack.alice("GET", f"/v1/jobs/{job_id}/metrics", 200).get_json()["epochs"]
    best, out = float("inf"), []
    for row in rows:
        if row["val_loss"] < best:
            best = row["val_loss"]
            out.append(row["epoch"])
    return out


@pytest.fixture(scope="module")
def kept_best(stack: Stack) -> dict[str, Any]:
    (job,) = stack.train(None, digits_spec(EPOCHS))
    return job


@pytest.fixture(scope="module")
def kept_all(stack: Stack, kept_best: dict[str, Any]) -> dict[str, Any]:
    (job,) = stack.train("all", digits_spec(EPOCHS))
    return job


def test_by_default_a_succeeded_job_keeps_only_its_best_checkpoint(stack: Stack, kept_best: dict[str, Any]) -> None:
    job_id, best = kept_best["id"], kept_best["best"]["epoch"]
    assert kept_best["status"] == "succeeded", kept_best
    improved = _improvements(stack, job_id)
    assert len(improved) >= 2 and improved[-1] == best, improved  # several checkpoints were written
    # The listing, the rows, the records and the files: the best checkpoint only.
    assert [(c["epoch"], c["is_best"]) for c in stack.checkpoints(job_id)] == [(best, True)]
    with stack.svc.db.session() as s:
        rows = s.execute(select(Checkpoint.artifact_key).where(Checkpoint.job_id == job_id)).scalars().all()
        exports = s.execute(select(JobExport.artifact_key).where(JobExport.job_id == job_id)).scalars().all()
        row = s.get(Job, job_id)
        assert (row.backup_key, row.backup_epoch) == (None, None)
    assert len(rows) == 1 and rows[0].endswith(f"epoch-{best:04d}.a1.keras")
    assert len(exports) == 3  # savedmodel, keras-serving, onnx: made from the best checkpoint, all kept
    assert set(stack.records(f"jobs/{job_id}/")) == {rows[0], *exports}
    assert stack.files(job_id, "checkpoints") == [f"epoch-{best:04d}.a1.keras"]
    assert stack.files(job_id, "backups") == []
    # What was kept still serves: the best checkpoint and its export.
    assert stack.alice("GET", f"/v1/jobs/{job_id}/checkpoints/best", 200).data
    assert stack.alice("GET", f"/v1/jobs/{job_id}/checkpoints/best", 200, query={"format": "savedmodel"}).data


def test_forks_from_what_was_pruned_are_409_naming_what_was_kept(stack: Stack, kept_best: dict[str, Any]) -> None:
    job_id, best = kept_best["id"], kept_best["best"]["epoch"]
    earlier = _improvements(stack, job_id)[0]
    fork = f"/v1/jobs/{job_id}/fork"
    missing = stack.alice("POST", fork, 409, json_body={"from": {"epoch": earlier}}).get_json()
    assert f"no checkpoint of epoch {earlier}" in missing["detail"] and f"here {best}." in missing["detail"]
    assert "TRAINYARD_KEEP_CHECKPOINTS" in missing["detail"]
    last = stack.alice("POST", fork, 409, json_body={"from": "last"}).get_json()
    assert "keeps no resume backup" in last["detail"] and "fork from best" in last["detail"]


@pytest.fixture(scope="module")
def fork_of_best(stack: Stack, kept_best: dict[str, Any]) -> dict[str, Any]:
    """A fork from the kept best checkpoint, accepted; no worker runs now, so it is cancelled while queued
    and keeps its copy of the weights."""
    child = stack.alice("POST", f"/v1/jobs/{kept_best['id']}/fork", 201, json_body={"from": "best"}).get_json()
    stack.alice("POST", f"/v1/jobs/{child['id']}/cancel", 202)
    return child


def test_a_fork_from_the_kept_best_checkpoint_is_accepted(kept_best: dict[str, Any],
                                                          fork_of_best: dict[str, Any]) -> None:
    assert fork_of_best["parent"]["from"] == "best"
    assert fork_of_best["parent"]["epoch"] == kept_best["best"]["epoch"]


def test_with_all_every_checkpoint_and_the_backup_stay(stack: Stack, kept_all: dict[str, Any]) -> None:
    job_id = kept_all["id"]
    assert kept_all["status"] == "succeeded", kept_all
    improved = _improvements(stack, job_id)
    listed = stack.checkpoints(job_id)
    assert [c["epoch"] for c in listed] == improved and len(improved) >= 2
    assert [c["is_best"] for c in listed] == [False] * (len(improved) - 1) + [True]
    with stack.svc.db.session() as s:
        row = s.get(Job, job_id)
        assert row.backup_epoch == EPOCHS and row.backup_key is not None
    assert stack.files(job_id, "checkpoints") == [f"epoch-{e:04d}.a1.keras" for e in improved]
    assert stack.files(job_id, "backups") == [f"epoch-{EPOCHS:04d}.a1.weights.h5"]
    # An earlier epoch's checkpoint is there to fork from.
    child = stack.alice("POST", f"/v1/jobs/{job_id}/fork", 201, json_body={"from": {"epoch": improved[0]}}).get_json()
    stack.alice("POST", f"/v1/jobs/{child['id']}/cancel", 202)


def _npz(seed: int, rows: int) -> bytes:
    x = np.random.default_rng(seed).normal(size=(rows, 3)).astype("float32")
    buf = io.BytesIO()
    np.savez(buf, x_train=x, y_train=np.arange(rows) % 2)
    return buf.getvalue()


def _upload(api: Api, content: bytes) -> dict[str, Any]:
    resp = api.client.post("/v1/datasets", headers=api.headers, content_type="multipart/form-data",
                           data={"file": (io.BytesIO(content), "data.npz")})
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()


def _seconds(stack: Stack, job_ids: list[str], month_start: datetime) -> tuple[float, float]:
    """Training seconds of these jobs from their rows: in all, and inside the month from `month_start`."""
    total = month = 0.0
    with stack.svc.db.session() as s:
        for job_id in job_ids:
            row = s.get(Job, job_id)
            if row.started_at is None or row.finished_at is None:
                continue
            total += (row.finished_at - row.started_at).total_seconds()
            if row.finished_at > month_start:
                month += (row.finished_at - max(row.started_at, month_start)).total_seconds()
    return total, month


def test_usage_adds_up_to_what_the_tenant_stores_and_trained(stack: Stack, kept_best: dict[str, Any],
                                                             fork_of_best: dict[str, Any],
                                                             kept_all: dict[str, Any]) -> None:
    mine = _upload(stack.alice, _npz(0, 200))
    theirs = _upload(stack.bob, _npz(1, 50))
    bob_job = stack.bob("POST", "/v1/jobs", 201, json_body=digits_spec(2)).get_json()
    stack.bob("POST", f"/v1/jobs/{bob_job['id']}/cancel", 202)

    usage = stack.alice("GET", "/v1/usage", 200)
    assert usage.headers["Cache-Control"] == "no-store"
    body = usage.get_json()
    jobs = stack.alice("GET", "/v1/jobs", 200, query={"limit": 100}).get_json()["jobs"]
    ids = [j["id"] for j in jobs]
    # The two trained jobs and the fork of the first (cancelled while queued, as is any other fork made
    # by the tests above); no job is left queued or running.
    statuses = [j["status"] for j in jobs]
    assert statuses.count("succeeded") == 2 and set(statuses) == {"succeeded", "cancelled"}, statuses

    # Bytes: the recorded size of every artifact under the tenant's jobs and its data set, by kind.
    records: dict[str, int] = {}
    for job_id in ids:
        records.update(stack.records(f"jobs/{job_id}/"))
    records.update(stack.records(f"datasets/{mine['id']}"))
    by_folder: dict[str, int] = {}
    for key, size in records.items():
        folder = "datasets" if key.startswith("datasets/") else key.split("/")[2]
        by_folder[folder] = by_folder.get(folder, 0) + size
    assert body["stored_bytes"] == {
        "total": sum(records.values()),
        "checkpoints": by_folder["checkpoints"], "exports": by_folder["exports"],
        "resume_backups": by_folder["backups"], "initial_weights": by_folder["initial"],
        "datasets": mine["size"],
    }
    listed = sum(c["size"] for job_id in ids for c in stack.checkpoints(job_id))
    assert body["stored_bytes"]["checkpoints"] == listed
    assert body["stored_bytes"]["datasets"] == by_folder["datasets"]
    assert all(v > 0 for v in body["stored_bytes"].values()), body

    # Jobs by status, and training seconds from the jobs' recorded start and end.
    assert body["jobs"] == {"total": len(ids), "queued": 0, "running": 0, "succeeded": 2, "failed": 0,
                            "cancelled": len(ids) - 2}
    month_start = datetime.fromisoformat(body["training_seconds"]["month_start"].replace("Z", "+00:00"))
    assert month_start.day == 1 and month_start.hour == month_start.minute == 0
    total, month = _seconds(stack, ids, month_start)
    assert total > 0
    assert body["training_seconds"]["total"] == pytest.approx(total, abs=2e-3)
    assert body["training_seconds"]["this_month"] == pytest.approx(month, abs=2e-3)

    # Another tenant sees its own usage only.
    other = stack.bob("GET", "/v1/usage", 200).get_json()
    assert other["stored_bytes"] == {"total": theirs["size"], "checkpoints": 0, "exports": 0, "resume_backups": 0,
                                     "initial_weights": 0, "datasets": theirs["size"]}
    assert other["jobs"] == {"total": 1, "queued": 0, "running": 0, "succeeded": 0, "failed": 0, "cancelled": 1}
    assert other["training_seconds"]["total"] == 0 and other["training_seconds"]["this_month"] == 0
    stack.alice("GET", "/v1/usage", 401, auth=False, request_valid=False)
