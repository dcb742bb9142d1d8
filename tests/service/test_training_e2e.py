"""End to end on Postgres + Redis: gunicorn (bin/api) and a Celery worker (bin/worker) as real processes,
real Keras training, the best checkpoint downloaded over HTTP and used to predict."""
from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests

from tests.conftest import tiny_spec, wait_until

FINAL = ("succeeded", "failed", "cancelled")


def wait_final(api_url: str, auth: dict[str, str], job_id: str, timeout: float = 120) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        body = requests.get(f"{api_url}/v1/jobs/{job_id}", headers=auth, timeout=5).json()
        return body if body["status"] in FINAL else None

    return wait_until(done, timeout, 0.2, f"job {job_id} to end")


@pytest.fixture(scope="module")
def digits_job(api_url: str, auth: dict[str, str], exporting_worker: Any) -> dict[str, Any]:
    spec = {
        "name": "digits-mlp",
        "dataset": {"id": "builtin:digits", "validation_split": 0.2, "normalize": "standardize"},
        "model": {"input_shape": [64], "layers": [{"type": "dense", "units": 64, "activation": "relu"},
                                                   {"type": "dropout", "rate": 0.1},
                                                   {"type": "dense", "units": 10, "activation": "softmax"}]},
        "loss": "sparse_categorical_crossentropy",
        "metrics": ["accuracy"],
        "optimizer": {"type": "adam", "learning_rate": 0.002},
        "callbacks": {"early_stopping": {"monitor": "val_loss", "patience": 5, "restore_best_weights": True},
                      "checkpoint": {"monitor": "val_loss", "mode": "min"}},
        "training": {"epochs": 25, "batch_size": 32, "seed": 0},
    }
    resp = requests.post(f"{api_url}/v1/jobs", json=spec, headers=auth, timeout=10)
    assert resp.status_code == 201, resp.text
    return wait_final(api_url, auth, resp.json()["id"], timeout=180)


def test_digits_job_succeeds_with_high_test_accuracy(digits_job: dict[str, Any]) -> None:
    assert digits_job["status"] == "succeeded", digits_job
    assert digits_job["stop_reason"] in ("completed", "early_stopping")
    assert digits_job["attempts"] == 1
    assert digits_job["test_metrics"]["accuracy"] >= 0.95
    assert digits_job["best"]["monitor"] == "val_loss"
    assert digits_job["started_at"] and digits_job["finished_at"]
    assert digits_job["model"]["params"] == 64 * 64 + 64 + 64 * 10 + 10
    timings = digits_job["timings"]
    assert set(timings) == {"queued_seconds", "data_seconds", "setup_seconds", "preflight_seconds",
                            "fit_seconds", "evaluate_seconds", "export_prepare_seconds", "export_savedmodel_seconds",
                            "export_keras_serving_seconds", "export_onnx_seconds", "export_store_seconds",
                            "total_seconds"}
    assert 0 < timings["fit_seconds"] < timings["total_seconds"]


def test_metrics_one_row_per_epoch_counting_from_one(api_url: str, auth: dict[str, str], digits_job: dict[str, Any]) -> None:
    epochs = requests.get(f"{api_url}/v1/jobs/{digits_job['id']}/metrics", headers=auth, timeout=5).json()["epochs"]
    assert [e["epoch"] for e in epochs] == list(range(1, digits_job["progress"]["epoch"] + 1))
    for row in epochs:
        assert {"loss", "val_loss", "accuracy", "val_accuracy", "learning_rate", "seconds"} <= set(row)
        assert row["learning_rate"] == pytest.approx(0.002)
    assert epochs[-1]["loss"] < epochs[0]["loss"]
    later = requests.get(f"{api_url}/v1/jobs/{digits_job['id']}/metrics?after=2", headers=auth, timeout=5).json()
    assert [e["epoch"] for e in later["epochs"]] == [e["epoch"] for e in epochs[2:]]


def test_best_checkpoint_downloads_with_etag_and_range_and_predicts(
    api_url: str, auth: dict[str, str], digits_job: dict[str, Any], tmp_path: Path, make_token: Any
) -> None:
    job_id = digits_job["id"]
    listed = requests.get(f"{api_url}/v1/jobs/{job_id}/checkpoints", headers=auth, timeout=5).json()["checkpoints"]
    best = [c for c in listed if c["is_best"]]
    assert len(best) == 1 and best[0]["epoch"] == digits_job["best"]["epoch"]
    url = f"{api_url}/v1/jobs/{job_id}/checkpoints/best"
    resp = requests.get(url, headers=auth, timeout=30)
    assert resp.status_code == 200
    assert resp.headers["Content-Disposition"].startswith("attachment;")
    assert resp.headers["ETag"] == f'"{best[0]["sha256"]}"'
    assert int(resp.headers["Content-Length"]) == len(resp.content) == best[0]["size"]
    assert hashlib.sha256(resp.content).hexdigest() == best[0]["sha256"]

    again = requests.get(url, headers={**auth, "If-None-Match": resp.headers["ETag"]}, timeout=5)
    assert again.status_code == 304 and again.content == b""

    part = requests.get(url, headers={**auth, "Range": "bytes=10-109"}, timeout=5)
    assert part.status_code == 206
    assert part.content == resp.content[10:110]
    assert part.headers["Content-Range"] == f"bytes 10-109/{len(resp.content)}"
    tail = requests.get(url, headers={**auth, "Range": "bytes=-50"}, timeout=5)
    assert tail.status_code == 206 and tail.content == resp.content[-50:]
    bad = requests.get(url, headers={**auth, "Range": f"bytes={len(resp.content) + 5}-"}, timeout=5)
    assert bad.status_code == 416

    # Another tenant learns nothing about this job, its files included: every read is a 404.
    other = {"Authorization": f"Bearer {make_token('e2e-mallory')}"}
    for path in ("", "/metrics", "/diagnostics", "/checkpoints", "/checkpoints/best"):
        stolen = requests.get(f"{api_url}/v1/jobs/{job_id}{path}", headers=other, timeout=5)
        assert stolen.status_code == 404 and stolen.content != resp.content, path

    import keras
    from sklearn.datasets import load_digits

    path = tmp_path / "best.keras"
    path.write_bytes(resp.content)
    model = keras.models.load_model(path)
    x, y = load_digits(return_X_y=True)
    norm = digits_job["model"]["normalization"]["inputs"]
    xs = (x - np.array(norm["mean"])) / np.array(norm["std"])
    accuracy = float((model.predict(xs.astype("float32"), verbose=0).argmax(axis=1) == y).mean())
    assert accuracy > 0.95


def test_uploaded_npz_dataset_trains(api_url: str, auth: dict[str, str], worker: Any) -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(240, 5)).astype("float32")
    y = (x[:, 0] + x[:, 1] > 0).astype("int64")
    buf = io.BytesIO()
    np.savez(buf, x_train=x[:160], y_train=y[:160], x_val=x[160:200], y_val=y[160:200],
             x_test=x[200:], y_test=y[200:])
    resp = requests.post(f"{api_url}/v1/datasets", headers=auth, timeout=10,
                         files={"file": ("blobs.npz", buf.getvalue())})
    assert resp.status_code == 201, resp.text
    ds = resp.json()
    assert ds["splits"] == {"train": 160, "val": 40, "test": 40}
    assert ds["input_shape"] == [5]
    assert ds["sha256"] == hashlib.sha256(buf.getvalue()).hexdigest()
    spec = tiny_spec(dataset={"id": ds["id"]},
                     model={"input_shape": [5], "layers": [{"type": "dense", "units": 8, "activation": "relu"},
                                                            {"type": "dense", "units": 1, "activation": "sigmoid"}]},
                     loss="binary_crossentropy", training={"epochs": 4, "batch_size": 16, "seed": 2})
    job = requests.post(f"{api_url}/v1/jobs", json=spec, headers=auth, timeout=10)
    assert job.status_code == 201, job.text
    final = wait_final(api_url, auth, job.json()["id"])
    assert final["status"] == "succeeded", final
    assert set(final["test_metrics"]) >= {"loss", "accuracy"}
    assert requests.delete(f"{api_url}/v1/datasets/{ds['id']}", headers=auth, timeout=5).status_code == 204
    assert requests.get(f"{api_url}/v1/datasets/{ds['id']}", headers=auth, timeout=5).status_code == 404


def test_uploaded_csv_dataset_trains(api_url: str, auth: dict[str, str], worker: Any) -> None:
    rng = np.random.default_rng(4)
    lines = ["a,b,label"]
    for _ in range(120):
        a, b = rng.normal(size=2)
        lines.append(f"{a:.4f},{b:.4f},{'yes' if a > b else 'no'}")
    resp = requests.post(f"{api_url}/v1/datasets", headers=auth, timeout=10,
                         files={"file": ("points.csv", "\n".join(lines).encode())}, data={"target": "label"})
    assert resp.status_code == 201, resp.text
    ds = resp.json()
    assert ds["n_classes"] == 2 and ds["input_shape"] == [2]
    spec = tiny_spec(dataset={"id": ds["id"], "validation_split": 0.25},
                     model={"input_shape": [2], "layers": [{"type": "dense", "units": 2, "activation": "softmax"}]},
                     training={"epochs": 2, "batch_size": 16, "seed": 2})
    job = requests.post(f"{api_url}/v1/jobs", json=spec, headers=auth, timeout=10)
    assert job.status_code == 201, job.text
    assert wait_final(api_url, auth, job.json()["id"])["status"] == "succeeded"


def test_cancel_running_job_stops_within_an_epoch_and_keeps_best(
    api_url: str, auth: dict[str, str], worker: Any
) -> None:
    spec = tiny_spec(dataset={"id": "builtin:digits", "normalize": "standardize"},
                     model={"input_shape": [64], "layers": [{"type": "dense", "units": 32, "activation": "relu"},
                                                             {"type": "dense", "units": 10, "activation": "softmax"}]},
                     training={"epochs": 5000, "batch_size": 8, "seed": 3})
    job_id = requests.post(f"{api_url}/v1/jobs", json=spec, headers=auth, timeout=10).json()["id"]
    wait_until(lambda: requests.get(f"{api_url}/v1/jobs/{job_id}", headers=auth, timeout=5).json()["progress"]["epoch"] >= 2,
               120, 0.1, "two epochs")
    assert requests.post(f"{api_url}/v1/jobs/{job_id}/cancel", headers=auth, timeout=5).status_code == 202
    final = wait_final(api_url, auth, job_id, timeout=30)
    assert final["status"] == "cancelled" and final["stop_reason"] == "cancelled"
    rows = requests.get(f"{api_url}/v1/jobs/{job_id}/metrics", headers=auth, timeout=5).json()["epochs"]
    assert len(rows) == final["progress"]["epoch"] < 5000
    assert requests.get(f"{api_url}/v1/jobs/{job_id}/checkpoints/best", headers=auth, timeout=10).status_code == 200
    # A finished job can be deleted with its files; a second cancel is a conflict.
    assert requests.post(f"{api_url}/v1/jobs/{job_id}/cancel", headers=auth, timeout=5).status_code == 409
    assert requests.delete(f"{api_url}/v1/jobs/{job_id}", headers=auth, timeout=5).status_code == 204
    assert requests.get(f"{api_url}/v1/jobs/{job_id}", headers=auth, timeout=5).status_code == 404


def test_cancelled_queued_job_never_starts(api_url: str, auth: dict[str, str], worker: Any) -> None:
    blocker = requests.post(f"{api_url}/v1/jobs", headers=auth, timeout=10,
                            json=tiny_spec(training={"epochs": 5000, "batch_size": 8, "seed": 1})).json()["id"]
    queued = requests.post(f"{api_url}/v1/jobs", json=tiny_spec(), headers=auth, timeout=10).json()["id"]
    after = requests.post(f"{api_url}/v1/jobs", json=tiny_spec(), headers=auth, timeout=10).json()["id"]
    resp = requests.post(f"{api_url}/v1/jobs/{queued}/cancel", headers=auth, timeout=5)
    assert resp.status_code == 202 and resp.json()["status"] == "cancelled"
    requests.post(f"{api_url}/v1/jobs/{blocker}/cancel", headers=auth, timeout=5)
    # One worker takes messages in order: once the job sent after it has run, the cancelled job's
    # message has been delivered too, and must have been skipped.
    assert wait_final(api_url, auth, after, timeout=90)["status"] == "succeeded"
    final = requests.get(f"{api_url}/v1/jobs/{queued}", headers=auth, timeout=5).json()
    assert final["status"] == "cancelled" and final["attempts"] == 0 and final["started_at"] is None
    metrics = requests.get(f"{api_url}/v1/jobs/{queued}/metrics", headers=auth, timeout=5).json()
    assert metrics["epochs"] == []


def test_the_job_records_what_trained_it(digits_job: dict[str, Any], worker: Any) -> None:
    """The reproducibility record: versions, Trainyard's commit, the device, determinism and the worker."""
    import platform
    import subprocess
    from importlib import metadata

    from tests.conftest import ROOT

    env = digits_job["environment"]
    tf_dist = next(d for d in ("tensorflow-cpu", "tensorflow") if _installed(d))
    assert env["python"] == platform.python_version()
    assert env["keras"] == metadata.version("keras")
    assert env["tensorflow"] == metadata.version(tf_dist)
    assert env["numpy"] == np.__version__
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert env["trainyard"] == {"version": metadata.version("trainyard"), "commit": head or None}
    assert env["device"]["kind"] == "cpu" and env["device"]["name"] and env["device"]["count"] >= 1
    assert env["determinism"] == {"seed": 0, "op_determinism": True, "onednn": env["determinism"]["onednn"]}
    # The worker that claimed it: the id its heartbeat row and log lines carry ("<celery node>:<pid>").
    assert env["worker"]["hostname"] == platform.node()
    assert env["worker"]["id"] in worker.output()


def _installed(distribution: str) -> bool:
    from importlib import metadata

    try:
        metadata.version(distribution)
        return True
    except metadata.PackageNotFoundError:
        return False

