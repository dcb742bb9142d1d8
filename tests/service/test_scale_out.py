"""Scale-out: several worker processes, each as its own host would run it (its own name, its own local
disk), against one Postgres database, one Redis and one S3-compatible object store (moto's server on
loopback). Dozens of jobs, two workers SIGKILLed while they train: every job must finish exactly once,
with its metrics complete, and its artifacts where the size threshold sends them.

The module runs its own database, Redis database, API and workers, like tests/service/test_faults.py.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import secrets
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
import redis
import requests
from sqlalchemy import func, select

from tests.conftest import (
    PG_ADMIN_DSN,
    PG_URL_BASE,
    ROOT,
    Proc,
    redis_db_url,
    start_api,
    start_worker,
    subprocess_env,
    tiny_spec,
    wait_until,
)
from tests.s3server import S3Server

WORKERS = 4
JOBS = 24
KILLS = 2
EPOCHS = 3
DB_MAX_BYTES = 8192
BUCKET = "trainyard-scale"


class Farm:
    def __init__(self, env: dict[str, str], logs: Path, s3: S3Server) -> None:
        from trainyard.db import Database
        from trainyard.settings import Settings

        self.env, self.logs, self.s3 = env, logs, s3
        self.settings = Settings.from_env(env)
        self.db = Database(self.settings.database_url)
        self.workers: list[Proc] = []
        self.api_url = ""
        self.auth: dict[str, str] = {}

    def start_workers(self, n: int, tmp: Path) -> None:
        """`n` workers at once, each with its own name and var folder, as separate machines would have."""
        from trainyard.db.models import Worker

        def one(i: int) -> None:
            env = {**self.env, "TRAINYARD_WORKER_NAME": f"host{i}", "TRAINYARD_VAR_DIR": str(tmp / f"host{i}")}
            self.workers.append(start_worker(env, self.logs / f"host{i}.log", self.settings))

        threads = [threading.Thread(target=one, args=(i,)) for i in range(1, n + 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

        def all_beating() -> bool:
            with self.db.session() as s:
                return s.execute(select(func.count()).select_from(Worker)).scalar_one() >= n

        wait_until(all_beating, 60, 0.2, "every worker's heartbeat")

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return requests.request(method, self.api_url + path, headers={**self.auth, **kwargs.pop("headers", {})},
                                timeout=30, **kwargs)

    def jobs(self, ids: list[str]) -> dict[str, Any]:
        from sqlalchemy.exc import OperationalError

        from trainyard.db.models import Job

        # Other suites on this machine may restart the shared Postgres server (test_faults does): the
        # workers ride that out, and so does the test's own polling.
        for _ in range(30):
            try:
                with self.db.session() as s:
                    return {j.id: j for j in s.execute(select(Job).where(Job.id.in_(ids))).scalars()}
            except OperationalError:
                time.sleep(1)
        raise AssertionError("the database did not come back")

    def logs_text(self, full: bool = False) -> str:
        return "\n".join(w.output() if full else w.output()[-3000:] for w in self.workers)


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Farm]:
    logs = tmp_path_factory.mktemp("scale-logs")
    s3 = S3Server(logs / "moto.log")
    name = f"trainyard_scale_{os.getpid()}_{secrets.token_hex(3)}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    redis_url = redis_db_url(1)
    redis.Redis.from_url(redis_url).flushdb()
    env = subprocess_env({
        "TRAINYARD_DATABASE_URL": f"{PG_URL_BASE}/{name}",
        "TRAINYARD_BROKER_URL": redis_url,
        "TRAINYARD_VAR_DIR": str(tmp_path_factory.mktemp("scale-api-var")),
        # Leases of 6 s: on a loaded 2-core machine a 1 s heartbeat thread can starve past a 3 s lease.
        "TRAINYARD_WORKER_HEARTBEAT_SECONDS": "2",
        "TRAINYARD_ARTIFACT_DB_MAX_BYTES": str(DB_MAX_BYTES),
        # Every checkpoint and the last backup stay once a job succeeds: the test reads them back from S3
        # (with the default, best, the worker deletes all but the best checkpoint).
        "TRAINYARD_KEEP_CHECKPOINTS": "all",
        **s3.env(BUCKET),
    })
    subprocess.run([str(ROOT / "bin" / "migrate")], env=env, check=True, cwd=ROOT)
    f = Farm(env, logs, s3)
    from service.auth import create_token

    with f.db.session() as s:
        f.auth = {"Authorization": f"Bearer {create_token(s, 'scale').token}"}
    api, f.api_url = start_api(env, logs / "api.log")
    try:
        yield f
    finally:
        for w in f.workers:
            if w.alive():
                os.killpg(w.popen.pid, signal.SIGKILL)
            w.stop()
        api.stop()
        s3.stop()
        f.db.dispose()
        redis.Redis.from_url(redis_url).flushdb()
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _npz_upload(farm: Farm) -> str:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(480, 16)).astype("float32")
    y = (x[:, :4].sum(axis=1) > 0).astype("int64")
    buf = io.BytesIO()
    np.savez(buf, x_train=x, y_train=y)
    resp = farm.api("POST", "/v1/datasets", files={"file": ("blobs.npz", buf.getvalue())})
    assert resp.status_code == 201, resp.text
    return resp.json()["id"]


def _csv_upload(farm: Farm) -> str:
    rows = ["a,b,label"] + [f"{i % 7},{(i * 3) % 5},{int(i % 7 > 3)}" for i in range(60)]
    resp = farm.api("POST", "/v1/datasets", files={"file": ("tiny.csv", "\n".join(rows).encode())},
                    data={"target": "label"})
    assert resp.status_code == 201, resp.text
    return resp.json()["id"]


def _spec(i: int, npz_id: str) -> dict[str, Any]:
    if i % 2 == 0:  # digits, no resource preference: the default queue
        return tiny_spec(
            name=f"scale-{i}",
            dataset={"id": "builtin:digits", "validation_split": 0.2, "normalize": "standardize"},
            model={"input_shape": [64], "layers": [{"type": "dense", "units": 32, "activation": "relu"},
                                                    {"type": "dense", "units": 10, "activation": "softmax"}]},
            training={"epochs": EPOCHS, "batch_size": 16, "seed": i}, diagnostics={"enabled": False})
    return tiny_spec(  # the upload in S3, on the cpu class's queue
        name=f"scale-{i}", resources={"gpus": 0},
        dataset={"id": npz_id, "validation_split": 0.25, "normalize": "standardize"},
        model={"input_shape": [16], "layers": [{"type": "dense", "units": 24, "activation": "relu"},
                                                {"type": "dense", "units": 2, "activation": "softmax"}]},
        training={"epochs": EPOCHS, "batch_size": 8, "seed": i}, diagnostics={"enabled": False})


def test_many_workers_one_postgres_redis_and_s3_every_job_exactly_once(farm: Farm, tmp_path: Path) -> None:
    from trainyard.db.models import Artifact, Checkpoint, Dataset, EpochMetrics

    began = time.monotonic()
    npz_id, csv_id = _npz_upload(farm), _csv_upload(farm)
    with farm.db.session() as s:
        where = {d.id: s.get(Artifact, d.artifact_key).location for d in s.execute(select(Dataset)).scalars()}
    assert where == {npz_id: "object", csv_id: "db"}  # the threshold: large to S3, small to Postgres

    farm.start_workers(WORKERS, tmp_path)
    started = time.monotonic()
    submitted = [farm.api("POST", "/v1/jobs", json=_spec(i, npz_id)) for i in range(JOBS)]
    assert all(r.status_code == 201 for r in submitted), [r.text for r in submitted if r.status_code != 201][:1]
    ids = [r.json()["id"] for r in submitted]
    queues = [r.json()["queue"] for r in submitted if r.json()["queue"]]
    # Jobs wait in their class's queue and say where they stand.
    assert {q["name"] for q in queues} == {"trainyard", "trainyard.cpu"}
    assert max(q["position"] for q in queues) >= JOBS // 2 - WORKERS

    # Kill two workers while they train, each once its job has a backup (so the next worker resumes).
    kills: Counter[str] = Counter()
    killed: list[Proc] = []
    for _ in range(KILLS):
        def victim() -> tuple[Proc, str] | None:
            for job in farm.jobs(ids).values():
                if job.status == "running" and (job.backup_epoch or 0) >= 1 and job.epoch < EPOCHS:
                    pid = int(job.worker_id.rsplit(":", 1)[1])
                    proc = next((w for w in farm.workers if w.popen.pid == pid and w.alive()), None)
                    if proc is not None:
                        return proc, job.id
            return None

        proc, job_id = wait_until(victim, 90, 0.05, "a worker training a job past its first backup")
        os.killpg(proc.popen.pid, signal.SIGKILL)
        proc.popen.wait(10)
        killed.append(proc)
        kills[farm.jobs([job_id])[job_id].id] += 1

    def all_final() -> bool:
        return all(j.status in ("succeeded", "failed", "cancelled") for j in farm.jobs(ids).values())

    try:
        wait_until(all_final, 240, 0.5, "every job to end")
    except AssertionError:
        raise AssertionError({j.id: (j.status, j.worker_id) for j in farm.jobs(ids).values()
                              if j.status not in ("succeeded",)}.__repr__() + farm.logs_text()) from None

    jobs = farm.jobs(ids)
    lost = [j.id for j in jobs.values() if j.status != "succeeded"]
    # Every hand-over is the reaper's, and it says so in its worker's log: a lease expired (the holder was
    # killed, or, on a starved machine, missed its heartbeats: it is then fenced off and stops itself).
    handovers = Counter(re.findall(r"job (job_[0-9a-f]{32}): lease of worker \S+ expired", farm.logs_text(full=True)))
    # A training is an attempt (a delivery that took the lease): exactly one per job plus one per hand-over.
    # Anything more is a job trained twice; a killed holder whose job was never handed over is a lost one.
    duplicates = sum(max(0, j.attempts - 1 - handovers[j.id]) for j in jobs.values())
    missing = [j.id for j in jobs.values() if j.attempts < 1 + handovers[j.id] or handovers[j.id] < kills[j.id]]
    with farm.db.session() as s:
        epochs = {job_id: [] for job_id in ids}
        for job_id, epoch, values in s.execute(select(EpochMetrics.job_id, EpochMetrics.epoch, EpochMetrics.values)
                                               .where(EpochMetrics.job_id.in_(ids)).order_by(EpochMetrics.epoch)):
            assert {"loss", "val_loss", "accuracy", "val_accuracy", "learning_rate"} <= set(values)
            epochs[job_id].append(epoch)
        checkpoints = list(s.execute(select(Checkpoint).where(Checkpoint.job_id.in_(ids))).scalars())
        artifacts = {a.key: a for a in s.execute(select(Artifact)).scalars()}
    incomplete = [job_id for job_id, seen in epochs.items() if seen != list(range(1, EPOCHS + 1))]
    print(f"\nscale-out run: jobs={JOBS} workers={WORKERS} workers_killed={len(killed)} "
          f"jobs_lost={len(lost)} duplicate_trainings={duplicates} resumed_after_kill={sum(kills.values())} "
          f"reaper_handovers={sum(handovers.values())} "
          f"incomplete_metrics={len(incomplete)} seconds={time.monotonic() - began:.0f} "
          f"(jobs: {time.monotonic() - started:.0f})")
    assert lost == [] and duplicates == 0 and missing == [] and incomplete == []
    assert all(j.backup_epoch == EPOCHS for j in jobs.values())
    assert {w.popen.pid for w in farm.workers} - {w.popen.pid for w in killed}  # survivors did the rest
    assert len({j.worker_id.split("@")[0] for j in jobs.values()}) >= 2  # the work was spread across hosts

    # Checkpoints and backups went to S3 (they are larger than the threshold); each row's object is there.
    fs = farm.s3.objects()
    in_s3 = [a for a in artifacts.values() if a.location == "object"]
    assert {c.artifact_key for c in checkpoints} <= {a.key for a in in_s3}
    assert any("/backups/" in a.key for a in in_s3)
    for a in in_s3:
        assert fs.info(f"{BUCKET}/artifacts/{a.key}")["size"] == a.size_bytes

    # Downloads stream out of S3 through the API, ranges included; the resumed jobs' best loads in Keras.
    import keras

    for job_id in kills:
        best = next(c for c in checkpoints if c.job_id == job_id and c.is_best)
        part = farm.api("GET", f"/v1/jobs/{job_id}/checkpoints/best", headers={"Range": "bytes=100-1099"})
        assert part.status_code == 206 and len(part.content) == 1000
        whole = farm.api("GET", f"/v1/jobs/{job_id}/checkpoints/best")
        assert hashlib.sha256(whole.content).hexdigest() == best.sha256 and whole.content[100:1100] == part.content
        path = tmp_path / f"{job_id}.keras"
        path.write_bytes(whole.content)
        assert keras.models.load_model(path).output_shape[-1] in (2, 10)
