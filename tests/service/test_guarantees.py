"""The README's Guarantees that need a fault from outside: the broker down at submit time, Redis restarting
empty, `limits.max_runtime_seconds` across a resumed attempt, and a best checkpoint damaged on disk.

It also shows a worker loading a data set applies the upload caps again (Security model).

The module runs its own Postgres database, its own `redis-server` (on a free port, so stopping it touches
no other test's broker), its own API (gunicorn) and workers, and a folder artifact store, so a disk fault is
a file removed or overwritten, as a failing disk would do. Nothing in the service knows it is being tested.
"""
from __future__ import annotations

import io
import os
import secrets
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
import redis
import requests

from tests.conftest import (
    PG_ADMIN_DSN,
    PG_URL_BASE,
    ROOT,
    Proc,
    free_port,
    start_api,
    start_worker,
    subprocess_env,
    wait_until,
)
from tests.service.test_faults import Cluster, digits_spec


class Broker:
    """A `redis-server` of this module's own, without persistence: a restart comes back empty."""

    def __init__(self, logs: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.logs = logs
        self.proc: Proc | None = None
        self._starts = 0

    def start(self) -> None:
        self._starts += 1
        self.proc = Proc(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                          "--appendonly", "no", "--daemonize", "no"], subprocess_env({}),
                         self.logs / f"redis-{self._starts}.log")

        def up() -> bool:
            assert self.proc is not None and self.proc.alive(), self.proc.output() if self.proc else ""
            try:
                return bool(redis.Redis.from_url(self.url, socket_timeout=1).ping())
            except redis.ConnectionError:
                return False

        wait_until(up, 20, 0.05, "redis-server to answer")

    def crash(self) -> None:
        """SIGKILL, as a crash or an out-of-memory kill would: whatever it held is gone."""
        assert self.proc is not None
        os.killpg(self.proc.popen.pid, signal.SIGKILL)
        self.proc.popen.wait(10)
        self.proc.stop()

    def has_message_for(self, job_id: str) -> bool:
        from trainyard.queue import QUEUE
        from workers.reaper import redis_messages_for

        return job_id in redis_messages_for(self.url, QUEUE)([job_id])


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    b = Broker(tmp_path_factory.mktemp("guarantees-redis"))
    b.start()
    yield b
    if b.proc is not None and b.proc.alive():
        b.crash()


@pytest.fixture(scope="module")
def cluster(broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    name = f"trainyard_guarantees_{os.getpid()}_{secrets.token_hex(3)}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    var = tmp_path_factory.mktemp("guarantees-var")
    env = subprocess_env({
        "TRAINYARD_DATABASE_URL": f"{PG_URL_BASE}/{name}",
        "TRAINYARD_BROKER_URL": broker.url,
        "TRAINYARD_VAR_DIR": str(var),
        "TRAINYARD_ARTIFACT_URL": f"file://{var}/artifacts",
        "TRAINYARD_WORKER_HEARTBEAT_SECONDS": "1",
    })
    subprocess.run([str(ROOT / "bin" / "migrate")], env=env, check=True, cwd=ROOT)
    c = Cluster(env, tmp_path_factory.mktemp("guarantees-logs"))
    from service.auth import create_token

    with c.db.session() as s:
        c.auth = {"Authorization": f"Bearer {create_token(s, 'guarantees').token}"}
    api, c.api_url = start_api(env, c.logs / "api.log")
    try:
        yield c
    finally:
        for w in c.workers:
            w.stop()
        api.stop()
        c.db.dispose()
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _stop_workers(cluster: Cluster) -> None:
    for w in cluster.live_workers():
        w.stop()


def _sigterm_worker_of(cluster: Cluster, job_id: str) -> None:
    """A deploy stops the worker running the job: it goes back to the queue with its last backup."""
    running = cluster.worker_running(job_id)
    running.popen.send_signal(signal.SIGTERM)
    running.popen.wait(60)
    running.stop()
    row = cluster.row(job_id)
    assert (row["status"], row["interruptions"]) == ("queued", 1), row


def _epochs(cluster: Cluster, job_id: str) -> list[dict[str, Any]]:
    return requests.get(f"{cluster.api_url}/v1/jobs/{job_id}/metrics", headers=cluster.auth,
                        timeout=10).json()["epochs"]


# --- the broker ------------------------------------------------------------------------------------


def test_a_job_submitted_while_the_broker_is_down_trains_once_it_is_back(cluster: Cluster, broker: Broker) -> None:
    cluster.ensure_workers(1)
    broker.crash()
    resp = requests.post(f"{cluster.api_url}/v1/jobs", json=digits_spec(epochs=2, batch_size=32),
                         headers=cluster.auth, timeout=60)
    assert resp.status_code == 201, resp.text
    job_id = resp.json()["id"]
    # Committed before the send was tried: readable, queued, and marked as never taken by the broker.
    assert requests.get(f"{cluster.api_url}/v1/jobs/{job_id}", headers=cluster.auth,
                        timeout=10).json()["status"] == "queued"
    assert cluster.row(job_id)["enqueued_at"] is None
    # The worker's reaper keeps trying while the broker is away; the job waits for it.
    wait_until(lambda: "reaping the outbox failed" in cluster.logs_text(), 60, 0.2, "the reaper to try the outbox")
    assert cluster.row(job_id)["status"] == "queued"

    broker.start()
    job = cluster.wait_final(job_id, timeout=120)
    assert job["status"] == "succeeded", job
    assert job["attempts"] == 1
    assert [e["epoch"] for e in _epochs(cluster, job_id)] == [1, 2]


def test_a_queued_job_whose_message_died_with_redis_still_trains(cluster: Cluster, broker: Broker) -> None:
    _stop_workers(cluster)  # nobody takes the message: it waits in Redis
    job_id = cluster.submit(digits_spec(epochs=2, batch_size=32))
    wait_until(lambda: cluster.row(job_id)["enqueued_at"] is not None, 10, 0.05, "the API's send")
    assert broker.has_message_for(job_id)
    broker.crash()
    broker.start()  # no persistence: back empty, the message is gone
    assert not broker.has_message_for(job_id)

    cluster.start_worker()
    job = cluster.wait_final(job_id, timeout=120)
    assert job["status"] == "succeeded", job
    assert [e["epoch"] for e in _epochs(cluster, job_id)] == [1, 2]


# --- max_runtime -----------------------------------------------------------------------------------

LIMIT_SECONDS = 12


def test_max_runtime_counts_earlier_attempts_and_ends_with_the_best_checkpoint(cluster: Cluster,
                                                                               tmp_path: Path) -> None:
    cluster.ensure_workers(1)
    job_id = cluster.submit(digits_spec(epochs=10_000, limits={"max_runtime_seconds": LIMIT_SECONDS}))
    # The first attempt trains for half the limit (by its own backups' clock), then a deploy stops it.
    wait_until(lambda: ((cluster.row(job_id)["resume_state"] or {}).get("elapsed_seconds") or 0) >= LIMIT_SECONDS / 2,
               120, 0.05, "half the limit to pass")
    _sigterm_worker_of(cluster, job_id)
    used = cluster.row(job_id)["resume_state"]["elapsed_seconds"]
    assert LIMIT_SECONDS / 2 <= used < LIMIT_SECONDS

    cluster.start_worker()
    job = cluster.wait_final(job_id, timeout=120)
    assert job["status"] == "succeeded", job
    assert job["stop_reason"] == "max_runtime" and job["attempts"] == 2 and job["error"] is None
    # Every epoch either attempt kept trained within the one limit: the second attempt had only what the
    # first left of it (given the whole limit again, the two would add up to about one and a half).
    epochs = _epochs(cluster, job_id)
    assert [e["epoch"] for e in epochs] == list(range(1, len(epochs) + 1))
    assert sum(e["seconds"] for e in epochs) <= LIMIT_SECONDS
    assert job["best"] is not None and job["best"]["epoch"] <= len(epochs)
    cluster.assert_best_checkpoint_loads(job_id, tmp_path)


# --- the best checkpoint ---------------------------------------------------------------------------


def _best_file(cluster: Cluster, job_id: str) -> Path:
    from sqlalchemy import select

    from trainyard.db.models import Checkpoint

    with cluster.db.session() as s:
        key = s.execute(select(Checkpoint.artifact_key)
                        .where(Checkpoint.job_id == job_id, Checkpoint.is_best)).scalar_one()
    path = Path(cluster.settings.var_dir) / "artifacts" / key
    assert path.is_file(), path
    return path


def test_a_best_checkpoint_damaged_on_disk_never_ends_succeeded(cluster: Cluster) -> None:
    """The whole path: the resumed attempt's download of the damaged file fails its sha256, and nothing
    replaces it. A file lost from the disk, and the database store, are covered one level down, at the
    worker's reporter (tests/workers/test_best_checkpoint_stored.py)."""
    cluster.ensure_workers(1)
    # The checkpoint keeps the highest training loss, which only epoch 1 has (the loss falls from there):
    # no later epoch replaces the best checkpoint, so the resumed attempt has no copy of its own.
    spec = digits_spec(epochs=5, callbacks={"checkpoint": {"monitor": "loss", "mode": "max"}})
    job_id = cluster.submit(spec)
    cluster.wait_backup(job_id, 2)
    _sigterm_worker_of(cluster, job_id)
    assert cluster.row(job_id)["best_epoch"] == 1
    path = _best_file(cluster, job_id)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, same size: only the sha256 can tell
    path.write_bytes(bytes(data))

    cluster.start_worker()
    job = cluster.wait_final(job_id, timeout=120)
    assert job["status"] == "failed", job
    assert job["error"]["code"] == "checkpoint_unavailable"
    assert "epoch 1" in job["error"]["message"] and "sha256" in job["error"]["message"]
    assert [e["epoch"] for e in _epochs(cluster, job_id)] == [1, 2, 3, 4, 5]  # it trained; it is not usable

    # The file lost outright: the download says so as a problem before any byte is sent, never a 500.
    path.unlink()
    resp = requests.get(f"{cluster.api_url}/v1/jobs/{job_id}/checkpoints/best", headers=cluster.auth, timeout=30)
    assert resp.status_code == 410, resp.text
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    assert resp.json()["type"].endswith("/artifact_missing") and "missing from the artifact store" in resp.json()["detail"]


# --- the worker trusts the store no more than the API trusted the upload ----------------------------


def test_a_worker_applies_the_upload_caps_again_to_the_data_set_it_loads(cluster: Cluster) -> None:
    """Security model: the worker re-applies the upload caps when it loads a data set. The .npz was within
    the caps when it was uploaded; the operator has lowered TRAINYARD_MAX_DATASET_BYTES since."""
    buf = io.BytesIO()
    np.savez(buf, x_train=np.zeros((2000, 64), dtype="float32"), y_train=np.arange(2000) % 10)  # 520 kB
    resp = requests.post(f"{cluster.api_url}/v1/datasets", headers=cluster.auth, timeout=30,
                         files={"file": ("big.npz", buf.getvalue())})
    assert resp.status_code == 201, resp.text
    _stop_workers(cluster)
    lowered = {**cluster.env, "TRAINYARD_MAX_DATASET_BYTES": "100000"}
    cluster.workers.append(start_worker(lowered, cluster.logs / "worker-lowered-cap.log", cluster.settings))

    job_id = cluster.submit(digits_spec(epochs=1, dataset={"id": resp.json()["id"]}))
    job = cluster.wait_final(job_id)
    assert job["status"] == "failed", job
    assert job["error"]["code"] == "dataset_unavailable"
    assert "more than the limit" in job["error"]["message"]
    assert _epochs(cluster, job_id) == []


def test_redis_never_hands_a_running_job_to_a_second_worker_by_itself() -> None:
    """Recovery is the lease's (seconds), not Redis' redelivery: its visibility timeout is a week."""
    from trainyard.queue import make_celery
    from trainyard.settings import Settings

    settings = Settings.from_env({"TRAINYARD_BROKER_URL": "redis://127.0.0.1:1/0", "TRAINYARD_VAR_DIR": "/tmp/x"})
    options = make_celery(settings).conf.broker_transport_options
    assert options["visibility_timeout"] >= 7 * 24 * 3600
