"""Workers stopped under a job: a job resumed after its worker was SIGKILLed mid-run reports the same
per-epoch metrics as an uninterrupted run of the same spec and seed on this machine, exactly (with shuffling
and dropout, the resumed epochs see the rows in the order and with the masks the uninterrupted run's epochs
saw); a worker told to stop (SIGTERM) while it traces a big model hands the job back within seconds.

Own database, Redis database and workers (like tests/service/test_faults.py, whose Cluster it uses, without
its Postgres restart), so the stopped workers are never the session's.
"""
from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.conftest import wait_until
from tests.service.test_faults import Cluster, own_cluster

SPEC: dict[str, Any] = {
    "name": "exact-resume",
    "dataset": {"id": "builtin:digits", "validation_split": 0.2, "normalize": "standardize"},
    "model": {"input_shape": [64], "layers": [{"type": "dense", "units": 64, "activation": "relu"},
                                               {"type": "dropout", "rate": 0.3},
                                               {"type": "dense", "units": 32, "activation": "relu"},
                                               {"type": "dropout", "rate": 0.3},
                                               {"type": "dense", "units": 10, "activation": "softmax"}]},
    "loss": "sparse_categorical_crossentropy",
    "metrics": ["accuracy"],
    "optimizer": {"type": "adam", "learning_rate": 0.002},
    # Batch 8: an epoch lasts about half a second, so the kill lands in the middle of the run.
    "training": {"epochs": 10, "batch_size": 8, "seed": 7, "shuffle": True},
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with own_cluster(tmp_path_factory, "stops") as c:
        yield c


def _curves(cluster: Cluster, job_id: str) -> dict[int, dict[str, float]]:
    rows = requests.get(f"{cluster.api_url}/v1/jobs/{job_id}/metrics", headers=cluster.auth, timeout=10).json()
    # `seconds` is wall time; every other value of an epoch must match.
    return {row["epoch"]: {k: v for k, v in row.items() if k not in ("epoch", "seconds")} for row in rows["epochs"]}


def test_a_job_resumed_after_kill_9_has_the_metrics_of_an_uninterrupted_run(cluster: Cluster) -> None:
    first = cluster.start_worker()
    whole_id = cluster.submit(SPEC)
    whole = cluster.wait_final(whole_id, timeout=180)
    assert whole["status"] == "succeeded" and whole["attempts"] == 1, whole

    job_id = cluster.submit(SPEC)
    cluster.wait_backup(job_id, 3)  # epoch 4 is under way
    os.killpg(first.popen.pid, signal.SIGKILL)
    first.popen.wait(10)
    backup_epoch = cluster.row(job_id)["backup_epoch"]
    assert 3 <= backup_epoch < SPEC["training"]["epochs"]

    cluster.start_worker()
    job = cluster.wait_final(job_id, timeout=180)
    assert job["status"] == "succeeded" and job["attempts"] == 2, job
    expected, resumed = _curves(cluster, whole_id), _curves(cluster, job_id)
    assert list(expected) == list(range(1, 11))
    assert "val_accuracy" in expected[1] and "learning_rate" in expected[1]
    for epoch in expected:
        assert resumed[epoch] == expected[epoch], f"epoch {epoch} (resumed after epoch {backup_epoch})"


def test_sigterm_while_tracing_a_big_model_hands_the_job_back_within_seconds(cluster: Cluster) -> None:
    cluster.ensure_workers(1)
    worker = cluster.live_workers()[0]
    # Preflight traces the train function of ten bidirectional LSTMs: tens of seconds of Python.
    layers = ([{"type": "reshape", "target_shape": [64, 1]}]
              + [{"type": "bidirectional", "layer": {"type": "lstm", "units": 8, "return_sequences": True}}] * 10
              + [{"type": "flatten"}, {"type": "dense", "units": 10, "activation": "softmax"}])
    job_id = cluster.submit({**SPEC, "name": "traced", "model": {"input_shape": [64], "layers": layers}})
    wait_until(lambda: cluster.row(job_id)["model_info"], 120, 0.1, "the model to be built")
    time.sleep(1)
    worker.popen.send_signal(signal.SIGTERM)
    began = time.monotonic()
    worker.popen.wait(60)
    seconds = time.monotonic() - began
    print(f"worker stopped {seconds:.1f} s after SIGTERM, in preflight")
    assert seconds < 10, "the warm shutdown waited for the trace"
    row = cluster.row(job_id)
    assert (row["status"], row["attempts"], row["interruptions"]) == ("queued", 1, 1), \
        f"{row}\nworker exit status {worker.popen.returncode}:\n{worker.output()[-3000:]}"
    assert "stopped (interrupted) while preflight" in worker.output()
    # The process ends without the interpreter's teardown (workers/celery_app.py), with the status and the
    # last log lines of a normal warm shutdown.
    assert worker.popen.returncode == 0
    resp = requests.post(f"{cluster.api_url}/v1/jobs/{job_id}/cancel", headers=cluster.auth, timeout=10)
    assert resp.status_code == 202 and cluster.row(job_id)["status"] == "cancelled"
