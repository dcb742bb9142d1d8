"""Fault tests: real worker processes killed, stopped, duplicated; Postgres restarted; Redis flushed.

The module runs its own Postgres server (tests/pgserver.py: restarting it disconnects nobody else), Redis
database, API (gunicorn) and workers, so the session's worker never takes these jobs and these faults never
touch the other tests' jobs. Workers heartbeat every
second, so a lease expires after three seconds. "A job that crashes its worker every time" is made from
the outside, honestly: the test SIGKILLs whichever worker starts running the job, as the kernel's OOM
killer would; nothing in the service knows it is being tested.
"""
from __future__ import annotations

import hashlib
import os
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
import requests

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
from tests.pgserver import PostgresServer

FINAL = ("succeeded", "failed", "cancelled")


def digits_spec(epochs: int, batch_size: int = 8, **overrides: Any) -> dict[str, Any]:
    """A small MLP on digits; batch size 8 makes an epoch last about half a second, so a kill lands mid-run."""
    spec = tiny_spec(
        name="faulty",
        dataset={"id": "builtin:digits", "validation_split": 0.2, "normalize": "standardize"},
        model={"input_shape": [64], "layers": [{"type": "dense", "units": 32, "activation": "relu"},
                                                {"type": "dense", "units": 10, "activation": "softmax"}]},
        optimizer={"type": "adam", "learning_rate": 0.001},
        training={"epochs": epochs, "batch_size": batch_size, "seed": 3},
        diagnostics={"enabled": False},
    )
    spec.update(overrides)
    return spec


class Cluster:
    def __init__(self, env: dict[str, str], logs: Path) -> None:
        from trainyard.db import Database
        from trainyard.settings import Settings

        self.env = env
        self.settings = Settings.from_env(env)
        self.db = Database(self.settings.database_url)
        self.logs = logs
        self.workers: list[Proc] = []
        self.api_url = ""
        self.auth: dict[str, str] = {}
        self._n = 0

    # processes
    def start_worker(self) -> Proc:
        self._n += 1
        proc = start_worker(self.env, self.logs / f"worker-{self._n}.log", self.settings)
        self.workers.append(proc)
        return proc

    def start_worker_in_background(self) -> threading.Thread:
        thread = threading.Thread(target=self.start_worker, daemon=True)
        thread.start()
        return thread

    def live_workers(self) -> list[Proc]:
        return [w for w in self.workers if w.alive()]

    def ensure_workers(self, n: int) -> None:
        while len(self.live_workers()) < n:
            self.start_worker()

    def worker_running(self, job_id: str) -> Proc:
        worker_id = self.row(job_id)["worker_id"]
        pid = int(worker_id.rsplit(":", 1)[1])
        # A worker started in the background may claim the job before start_worker has seen its first
        # heartbeat and listed it: wait for it to be listed.
        return wait_until(lambda: next((w for w in self.workers if w.popen.pid == pid), None), 60, 0.05,
                          f"worker {worker_id} to be listed")

    def logs_text(self) -> str:
        return "\n".join(w.output() for w in self.workers)

    # API and database
    def submit(self, spec: dict[str, Any]) -> str:
        resp = requests.post(f"{self.api_url}/v1/jobs", json=spec, headers=self.auth, timeout=10)
        assert resp.status_code == 201, resp.text
        return resp.json()["id"]

    def row(self, job_id: str) -> dict[str, Any]:
        from trainyard.db.models import Job

        with self.db.session() as s:
            job = s.get(Job, job_id)
            return {c.name: getattr(job, c.name) for c in Job.__table__.columns}

    def metrics(self, job_id: str) -> list[tuple[int, datetime]]:
        from sqlalchemy import select

        from trainyard.db.models import EpochMetrics

        with self.db.session() as s:
            return list(s.execute(select(EpochMetrics.epoch, EpochMetrics.created_at)
                                  .where(EpochMetrics.job_id == job_id).order_by(EpochMetrics.epoch)))

    def wait_epoch(self, job_id: str, epoch: int, timeout: float = 60) -> None:
        wait_until(lambda: self.row(job_id)["epoch"] >= epoch, timeout, 0.05, f"{job_id} to reach epoch {epoch}")

    def wait_backup(self, job_id: str, epoch: int, timeout: float = 60) -> None:
        wait_until(lambda: (self.row(job_id)["backup_epoch"] or 0) >= epoch, timeout, 0.05,
                   f"{job_id}'s backup of epoch {epoch}")

    def wait_final(self, job_id: str, timeout: float = 90) -> dict[str, Any]:
        def final() -> dict[str, Any] | None:
            body = requests.get(f"{self.api_url}/v1/jobs/{job_id}", headers=self.auth, timeout=10).json()
            return body if body["status"] in FINAL else None

        try:
            return wait_until(final, timeout, 0.2, f"job {job_id} to end")
        except AssertionError:
            raise AssertionError(f"{self.row(job_id)}\n{self.logs_text()[-6000:]}") from None

    def assert_best_checkpoint_loads(self, job_id: str, tmp_path: Path) -> None:
        import keras

        listed = requests.get(f"{self.api_url}/v1/jobs/{job_id}/checkpoints", headers=self.auth,
                              timeout=10).json()["checkpoints"]
        best = [c for c in listed if c["is_best"]]
        assert len(best) == 1
        blob = requests.get(f"{self.api_url}/v1/jobs/{job_id}/checkpoints/best", headers=self.auth,
                            timeout=30).content
        assert hashlib.sha256(blob).hexdigest() == best[0]["sha256"]
        path = tmp_path / f"{job_id}.keras"
        path.write_bytes(blob)
        assert keras.models.load_model(path).predict(__import__("numpy").zeros((1, 64)), verbose=0).shape == (1, 10)


@contextmanager
def own_cluster(tmp_path_factory: pytest.TempPathFactory, name: str, admin_dsn: str = PG_ADMIN_DSN,
                url_base: str = PG_URL_BASE) -> Iterator[Cluster]:
    """A Cluster on its own Postgres database (on the shared server, or the one `admin_dsn` and `url_base`
    name) and Redis database, with its API started; workers are the caller's to start. Everything is killed
    and dropped when it ends."""
    name = f"trainyard_{name}_{os.getpid()}_{secrets.token_hex(3)}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    redis_url = redis_db_url(1)
    redis.Redis.from_url(redis_url).flushdb()
    var = tmp_path_factory.mktemp("cluster-var")
    env = subprocess_env({
        "TRAINYARD_DATABASE_URL": f"{url_base}/{name}",
        "TRAINYARD_BROKER_URL": redis_url,
        "TRAINYARD_VAR_DIR": str(var),
        "TRAINYARD_WORKER_HEARTBEAT_SECONDS": "1",
    })
    subprocess.run([str(ROOT / "bin" / "migrate")], env=env, check=True, cwd=ROOT)
    c = Cluster(env, tmp_path_factory.mktemp("cluster-logs"))
    from service.auth import create_token

    with c.db.session() as s:
        c.auth = {"Authorization": f"Bearer {create_token(s, 'faults').token}"}
    api, c.api_url = start_api(env, c.logs / "api.log")
    try:
        yield c
    finally:
        for w in c.workers:
            if w.alive():
                os.killpg(w.popen.pid, signal.SIGKILL)
            w.stop()
        api.stop()
        c.db.dispose()
        redis.Redis.from_url(redis_url).flushdb()
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    """This module's own Postgres server: restarting it disconnects nobody but this module's processes."""
    server = PostgresServer()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, postgres: PostgresServer) -> Iterator[Cluster]:
    with own_cluster(tmp_path_factory, "faults", postgres.admin_dsn, postgres.url_base) as c:
        yield c


def _kill9(proc: Proc) -> None:
    os.killpg(proc.popen.pid, signal.SIGKILL)
    proc.popen.wait(10)


def test_kill_9_during_epoch_3_resumes_on_a_restarted_worker(cluster: Cluster, tmp_path: Path) -> None:
    first = cluster.start_worker()
    job_id = cluster.submit(digits_spec(epochs=10))
    cluster.wait_backup(job_id, 2)  # epoch 3 is under way
    killed_at = datetime.now(timezone.utc)
    _kill9(first)
    assert cluster.row(job_id)["status"] == "running"
    backup_epoch = cluster.row(job_id)["backup_epoch"]
    assert backup_epoch is not None and backup_epoch >= 2

    cluster.start_worker()
    job = cluster.wait_final(job_id)
    assert job["status"] == "succeeded", job
    assert job["attempts"] == 2
    rows = cluster.metrics(job_id)
    assert [epoch for epoch, _ in rows] == list(range(1, 11))
    # Resumed, not restarted: the rows of the epochs before the backup are the first attempt's.
    assert all(created < killed_at for epoch, created in rows if epoch <= backup_epoch)
    assert all(created > killed_at for epoch, created in rows if epoch > backup_epoch + 1)
    cluster.assert_best_checkpoint_loads(job_id, tmp_path)


def test_a_job_delivered_twice_to_two_workers_trains_once(cluster: Cluster) -> None:
    from trainyard.queue import enqueue_job, make_celery

    cluster.ensure_workers(2)
    job_id = cluster.submit(digits_spec(epochs=3, batch_size=16))
    enqueue_job(make_celery(cluster.settings), job_id)  # a second message: both idle workers get one
    job = cluster.wait_final(job_id)
    assert job["status"] == "succeeded" and job["attempts"] == 1
    assert [e for e, _ in cluster.metrics(job_id)] == [1, 2, 3]
    wait_until(lambda: f"job {job_id} is running on" in cluster.logs_text()
               or f"job {job_id} is already succeeded" in cluster.logs_text(), 10, 0.2, "the duplicate's delivery")


def test_postgres_restart_and_redis_flush_lose_nothing(cluster: Cluster, postgres: PostgresServer) -> None:
    cluster.ensure_workers(2)
    # Three jobs per worker: the last ones are still queued after the restart, whatever the machine's speed.
    jobs = [cluster.submit(digits_spec(epochs=4, batch_size=8)) for _ in range(6)]
    cluster.wait_epoch(jobs[0], 1)
    postgres.restart()
    # This test's own pooled connections died with the server (each would fail its first query once, see
    # trainyard/db); the API and the workers get no such help.
    cluster.db.dispose()
    queued = wait_until(lambda: [j for j in jobs if cluster.row(j)["status"] == "queued"], 30, 0.2, "a queued job")
    assert queued
    redis.Redis.from_url(cluster.settings.broker_url).flushdb()
    for job_id in jobs:
        job = cluster.wait_final(job_id, timeout=120)
        assert job["status"] == "succeeded", job
        assert [e for e, _ in cluster.metrics(job_id)] == [1, 2, 3, 4]


def test_sigterm_puts_the_job_back_and_the_next_worker_resumes_it(cluster: Cluster) -> None:
    cluster.ensure_workers(2)
    job_id = cluster.submit(digits_spec(epochs=8))
    cluster.wait_backup(job_id, 2)
    running = cluster.worker_running(job_id)
    stopped_at = datetime.now(timezone.utc)
    running.popen.send_signal(signal.SIGTERM)
    running.popen.wait(30)
    assert "re-queued" in running.output()
    job = cluster.wait_final(job_id)
    assert job["status"] == "succeeded", job
    row = cluster.row(job_id)
    assert (row["attempts"], row["interruptions"]) == (2, 1)
    rows = cluster.metrics(job_id)
    assert [e for e, _ in rows] == list(range(1, 9))
    resumed_after = min(e for e, created in rows if created > stopped_at)
    assert resumed_after >= 3, "the next worker started over instead of resuming"


def test_cancel_during_a_run_stops_within_an_epoch(cluster: Cluster) -> None:
    cluster.ensure_workers(1)
    job_id = cluster.submit(digits_spec(epochs=30))
    cluster.wait_epoch(job_id, 2)
    epoch_seconds = max(r["seconds"] for r in requests.get(
        f"{cluster.api_url}/v1/jobs/{job_id}/metrics", headers=cluster.auth, timeout=10).json()["epochs"])
    at_cancel = cluster.row(job_id)["epoch"]
    resp = requests.post(f"{cluster.api_url}/v1/jobs/{job_id}/cancel", headers=cluster.auth, timeout=10)
    assert resp.status_code == 202
    cancelled_at = time.monotonic()
    wait_until(lambda: cluster.row(job_id)["status"] == "cancelled", epoch_seconds + 5, 0.05, "cancelled")
    assert time.monotonic() - cancelled_at < epoch_seconds + 5
    epochs = [e for e, _ in cluster.metrics(job_id)]
    time.sleep(1)
    assert [e for e, _ in cluster.metrics(job_id)] == epochs, "metric rows after the cancel"
    assert max(epochs) <= at_cancel + 1
    job = cluster.wait_final(job_id)
    assert job["stop_reason"] == "cancelled" and job["best"] is not None


def test_a_job_that_kills_its_worker_every_time_fails_after_max_attempts(cluster: Cluster) -> None:
    cluster.ensure_workers(2)
    job_id = cluster.submit(digits_spec(epochs=50))
    for attempt in (1, 2, 3):
        wait_until(lambda: (r := cluster.row(job_id))["status"] == "running" and r["attempts"] == attempt,
                   30, 0.05, f"attempt {attempt} to start")
        _kill9(cluster.worker_running(job_id))
        if attempt < 3:
            cluster.start_worker_in_background()
    job = cluster.wait_final(job_id, timeout=60)
    assert job["status"] == "failed", job
    assert job["error"]["code"] == "worker_lost"
    assert "3 times" in job["error"]["message"]
    assert job["attempts"] == 3


def test_load_many_submitters_and_pollers_no_5xx_and_every_job_ends(cluster: Cluster) -> None:
    cluster.ensure_workers(2)
    deadline = time.monotonic() + 6
    accepted: set[str] = set()
    statuses: list[int] = []
    lock = threading.Lock()
    spec = tiny_spec(training={"epochs": 1, "batch_size": 32, "seed": 1}, diagnostics={"enabled": False})

    def record(resp: requests.Response) -> None:
        with lock:
            statuses.append(resp.status_code)

    def submitter(n: int) -> None:
        session = requests.Session()
        i = 0
        while time.monotonic() < deadline and i < 4:
            key = f"load-{n}-{i}"
            for _ in range(2):  # every submission is retried once with its key, as a client would on a timeout
                resp = session.post(f"{cluster.api_url}/v1/jobs", json={**spec, "name": key}, timeout=30,
                                    headers={**cluster.auth, "Idempotency-Key": key})
                record(resp)
                if resp.status_code == 201:
                    with lock:
                        accepted.add(resp.json()["id"])
            if i % 2 == 1:
                record(session.post(f"{cluster.api_url}/v1/jobs/{resp.json()['id']}/cancel",
                                    headers=cluster.auth, timeout=30))
            i += 1

    def poller() -> None:
        session = requests.Session()
        while time.monotonic() < deadline:
            record(session.get(f"{cluster.api_url}/v1/jobs?limit=50", headers=cluster.auth, timeout=30))
            with lock:
                some = next(iter(accepted), None)
            if some:
                record(session.get(f"{cluster.api_url}/v1/jobs/{some}", headers=cluster.auth, timeout=30))
                record(session.get(f"{cluster.api_url}/v1/jobs/{some}/metrics", headers=cluster.auth, timeout=30))

    threads = [threading.Thread(target=submitter, args=(n,)) for n in range(5)]
    threads += [threading.Thread(target=poller) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert statuses and not [s for s in statuses if s >= 500]
    assert set(statuses) <= {200, 201, 202, 409}
    assert len(accepted) >= 10
    for job_id in accepted:
        assert cluster.wait_final(job_id, timeout=90)["status"] in ("succeeded", "cancelled")
