"""Cancelling takes effect within seconds in every phase of a job, on the real worker: loading a big data set,
building a big model, preflight, the first epoch's tracing, and between batches.

Each phase is made slow honestly, with what a tenant may send: a 2 GB (decompressed) upload, dense layers with
orthogonal initialisers (a QR decomposition each), a stack of bidirectional LSTMs whose train function takes a
minute to trace. The job is cancelled once it is in that phase; it must end `cancelled` within
`CANCEL_BOUND_SECONDS`, far less than the phase takes, and its logs name the phase it was stopped in. The last
test trains a job on the same worker process afterwards: an interrupted phase leaves the worker usable.
"""
from __future__ import annotations

import io
import time
import zipfile
from typing import Any

import numpy as np
import pytest
import requests

from tests.conftest import Proc, wait_until

# Run alone (`make test`'s second pytest): the latencies below are the README's measured figures for a
# 2-core machine, and under pytest-xdist the other process's tests stretched preflight's native tracing past
# the worker's 10 s stuck bound.
pytestmark = pytest.mark.exclusive

# What the README promises for phases that return to Python at least this often (see Guarantees).
CANCEL_BOUND_SECONDS = 10.0
LATENCIES: dict[str, float] = {}


def _submit(api_url: str, auth: dict[str, str], spec: dict[str, Any]) -> str:
    resp = requests.post(f"{api_url}/v1/jobs", json=spec, headers=auth, timeout=30)
    assert resp.status_code == 201, resp.text
    return resp.json()["id"]


def _job(api_url: str, auth: dict[str, str], job_id: str) -> dict[str, Any]:
    return requests.get(f"{api_url}/v1/jobs/{job_id}", headers=auth, timeout=10).json()


def _cancel_and_time(api_url: str, auth: dict[str, str], job_id: str) -> tuple[dict[str, Any], float]:
    """Cancel the job; return it once it ended, and the seconds from the cancel's 202 to its final status."""
    resp = requests.post(f"{api_url}/v1/jobs/{job_id}/cancel", headers=auth, timeout=10)
    assert resp.status_code == 202, resp.text
    began = time.monotonic()
    job = wait_until(lambda: (j := _job(api_url, auth, job_id))["status"] != "running" and j, 120, 0.05,
                     f"job {job_id} to end after its cancel")
    return job, time.monotonic() - began


def _stopped_line(api_url: str, auth: dict[str, str], job_id: str) -> str:
    def line() -> str | None:
        logs = requests.get(f"{api_url}/v1/jobs/{job_id}/logs?limit=1000", headers=auth, timeout=10).json()["logs"]
        return next((entry["message"] for entry in logs if entry["message"].startswith("stopped (cancelled)")), None)

    return wait_until(line, 15, 0.2, f"job {job_id}'s 'stopped' log line")


def _assert_cancelled_in(api_url: str, auth: dict[str, str], job_id: str, phase: str) -> None:
    job, seconds = _cancel_and_time(api_url, auth, job_id)
    LATENCIES[phase] = seconds
    print(f"cancel while {phase}: {seconds:.2f} s")
    assert (job["status"], job["stop_reason"], job["error"]) == ("cancelled", "cancelled", None), job
    assert seconds < CANCEL_BOUND_SECONDS, f"cancelling while {phase} took {seconds:.1f} s"
    assert f"while {phase}," in _stopped_line(api_url, auth, job_id)


def _running(api_url: str, auth: dict[str, str], job_id: str, *, built: bool = False) -> None:
    """Wait until the job runs (and, with `built`, until its model is built: the phase after setup began)."""
    wait_until(lambda: (j := _job(api_url, auth, job_id))["status"] == "running" and (not built or j["model"]),
               300, 0.1, f"job {job_id} to run")


def _one_hot_npz(rows: int, features: int) -> bytes:
    """An .npz of `rows` one-hot float32 rows: 4 bytes x rows x features decompressed, a hundredth of that
    compressed. Written a block at a time, so the test never holds the array."""
    block_rows = features * 256
    block = np.tile(np.eye(features, dtype=np.float32), (256, 1))
    header = io.BytesIO()
    np.lib.format.write_array_header_2_0(header, {"descr": "<f4", "fortran_order": False,
                                                  "shape": (rows, features)})
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        with zf.open("x_train.npy", "w", force_zip64=True) as fh:
            fh.write(header.getvalue())
            for start in range(0, rows, block_rows):
                fh.write(block[: min(block_rows, rows - start)].tobytes())
        labels = io.BytesIO()
        np.save(labels, (np.arange(rows) % features % 10).astype(np.int64))
        zf.writestr("y_train.npy", labels.getvalue())
    return out.getvalue()


def _dense_spec(dataset: dict[str, Any], layers: list[dict[str, Any]], **overrides: Any) -> dict[str, Any]:
    return {
        "name": "cancel-phases",
        "dataset": dataset,
        "model": {"input_shape": [64], "layers": layers + [{"type": "dense", "units": 10, "activation": "softmax"}]},
        "loss": "sparse_categorical_crossentropy",
        "training": {"epochs": 30, "batch_size": 32, "seed": 0},
        **overrides,
    }


def _lstm_stack(n: int) -> list[dict[str, Any]]:
    return ([{"type": "reshape", "target_shape": [64, 1]}]
            + [{"type": "bidirectional", "layer": {"type": "lstm", "units": 8, "return_sequences": True}}] * n
            + [{"type": "flatten"}])


@pytest.fixture(scope="module")
def worker_pid(worker: Proc) -> int:
    return worker.popen.pid


def test_cancel_while_loading_a_big_data_set(api_url: str, auth: dict[str, str], worker_pid: int) -> None:
    # 7.8 million rows x 64 features: 2 GB once inflated (the default cap), 20 MB uploaded; the worker spends
    # many seconds inflating, checking and loading it.
    upload = _one_hot_npz(7_800_000, 64)
    resp = requests.post(f"{api_url}/v1/datasets", headers=auth, files={"file": ("onehot.npz", upload)}, timeout=300)
    assert resp.status_code == 201, resp.text
    job_id = _submit(api_url, auth, _dense_spec({"id": resp.json()["id"]}, []))
    _running(api_url, auth, job_id)
    time.sleep(1.0)
    _assert_cancelled_in(api_url, auth, job_id, "loading data")
    assert _job(api_url, auth, job_id)["model"] is None, "the model was never built"


def test_cancel_while_building_a_big_model(api_url: str, auth: dict[str, str], worker_pid: int) -> None:
    # Twelve 2000-unit dense layers with orthogonal kernels (44 million parameters, under the default cap):
    # each kernel is a QR decomposition of a 2000 x 2000 matrix, seconds each on a small machine.
    layers = [{"type": "dense", "units": 2000, "activation": "relu", "kernel_initializer": "orthogonal"}] * 12
    job_id = _submit(api_url, auth, _dense_spec({"id": "builtin:digits"}, layers))
    _running(api_url, auth, job_id)
    # Early in the build (loading digits takes milliseconds): the interrupt comes 1.5-2 s after the cancel,
    # and on an idle machine the twelve decompositions took less than the 4 s a later cancel needed.
    time.sleep(0.5)
    _assert_cancelled_in(api_url, auth, job_id, "building the model")
    assert _job(api_url, auth, job_id)["model"] is None


def test_cancel_during_preflight(api_url: str, auth: dict[str, str], worker_pid: int) -> None:
    # Preflight's first step traces the train function of ten bidirectional LSTMs: tens of seconds.
    job_id = _submit(api_url, auth, _dense_spec({"id": "builtin:digits"}, _lstm_stack(10)))
    _running(api_url, auth, job_id, built=True)
    time.sleep(1.0)
    _assert_cancelled_in(api_url, auth, job_id, "preflight")


def test_cancel_while_tracing_the_first_epoch(api_url: str, auth: dict[str, str], worker_pid: int) -> None:
    # Without preflight, the first batch of fit traces that train function.
    spec = _dense_spec({"id": "builtin:digits"}, _lstm_stack(10), diagnostics={"preflight": False})
    job_id = _submit(api_url, auth, spec)
    _running(api_url, auth, job_id, built=True)
    time.sleep(1.0)
    _assert_cancelled_in(api_url, auth, job_id, "training")


def test_cancel_between_batches_keeps_the_best_checkpoint(api_url: str, auth: dict[str, str],
                                                           worker_pid: int) -> None:
    layers = [{"type": "dense", "units": 32, "activation": "relu"}]
    spec = _dense_spec({"id": "builtin:digits", "validation_split": 0.2, "normalize": "standardize"}, layers,
                       training={"epochs": 200, "batch_size": 8, "seed": 0})
    job_id = _submit(api_url, auth, spec)
    wait_until(lambda: _job(api_url, auth, job_id)["best"], 120, 0.1, "a best checkpoint")
    job, seconds = _cancel_and_time(api_url, auth, job_id)
    LATENCIES["between batches"] = seconds
    print(f"cancel between batches: {seconds:.2f} s")
    assert (job["status"], job["stop_reason"], job["error"]) == ("cancelled", "cancelled", None), job
    assert seconds < CANCEL_BOUND_SECONDS
    assert job["best"] is not None
    best = requests.get(f"{api_url}/v1/jobs/{job_id}/checkpoints/best", headers=auth, timeout=30)
    assert best.status_code == 200 and len(best.content) > 0


def test_the_same_worker_trains_the_next_job(api_url: str, auth: dict[str, str], worker: Proc,
                                             worker_pid: int) -> None:
    from tests.conftest import tiny_spec

    job_id = _submit(api_url, auth, tiny_spec(name="after-cancels"))
    job = wait_until(lambda: (j := _job(api_url, auth, job_id))["status"] in ("succeeded", "failed") and j, 120,
                     0.2, "the next job")
    assert job["status"] == "succeeded", job
    assert worker.alive() and worker.popen.pid == worker_pid, "the worker process was replaced"
    print("cancellation latency per phase (s):", {k: round(v, 2) for k, v in LATENCIES.items()})
