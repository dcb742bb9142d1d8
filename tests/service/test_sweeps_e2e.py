"""Sweeps end to end: gunicorn (bin/api), a real Celery worker (bin/worker), Postgres, Redis, real Keras.

The worker, not the API, submits every trial after the first `parallelism`, stops trials the median rule
condemns while they run, and the best trial's checkpoint downloads like any job's.
"""
from __future__ import annotations

import hashlib
import time
from typing import Any

import requests
from openapi_schema_validator import OAS31Validator

from tests.conftest import tiny_spec, wait_until
from tests.service.test_openapi import load_document

FINAL = ("succeeded", "failed", "cancelled")
FAST = {"enabled": False, "preflight": False}  # trials are tiny; skip per-epoch diagnostics


def sweep_schema() -> OAS31Validator:
    return OAS31Validator({"$ref": "#/components/schemas/Sweep", "components": load_document()["components"]})


def get(api_url: str, auth: dict[str, str], path: str) -> dict[str, Any]:
    resp = requests.get(api_url + path, headers=auth, timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_sweep_runs_to_completion_ranks_trials_and_stops_bad_ones_early(
    api_url: str, auth: dict[str, str], worker: Any
) -> None:
    began = time.monotonic()
    body = {
        "name": "iris-lr",
        "base": tiny_spec(training={"epochs": 4, "batch_size": 16, "seed": 1}, diagnostics=FAST),
        # Two good learning rates first, then two so small the model barely moves: by the time the bad
        # ones run (one worker takes trials in order), both good ones have finished, so the median rule
        # has its two finished trials to compare with at epoch 2.
        "search": {"optimizer.learning_rate": {"type": "grid", "values": [0.05, 0.02, 1e-5, 2e-5]},
                   "model.layers[0].units": {"type": "choice", "values": [8, 16]}},
        "objective": {"metric": "val_loss", "mode": "min"},
        "max_trials": 4,
        "parallelism": 2,
        "early_stopping": {"type": "median", "grace_epochs": 1, "min_trials": 2},
        "seed": 7,
    }
    resp = requests.post(f"{api_url}/v1/sweeps", json=body, headers=auth, timeout=30)
    assert resp.status_code == 201, resp.text
    sweep_id = resp.json()["id"]
    assert resp.headers["Location"] == f"/v1/sweeps/{sweep_id}"
    assert resp.json()["progress"]["submitted"] == 2

    max_active = 0

    def finished() -> dict[str, Any] | None:
        nonlocal max_active
        sweep = get(api_url, auth, f"/v1/sweeps/{sweep_id}")
        by_status = sweep["progress"]["by_status"]
        max_active = max(max_active, by_status["queued"] + by_status["running"])
        return sweep if sweep["status"] != "running" else None

    sweep = wait_until(finished, 180, 0.2, "the sweep to finish")
    assert not list(sweep_schema().iter_errors(sweep))
    assert sweep["status"] == "completed" and sweep["progress"]["submitted"] == 4
    assert max_active <= 2
    trials = sweep["trials"]
    assert [t["rank"] for t in trials] == [1, 2, 3, 4]
    values = [t["value"] for t in trials]
    assert values == sorted(values)
    by_trial = {t["trial"]: t for t in trials}
    for good in (0, 1):
        assert by_trial[good]["status"] == "succeeded" and by_trial[good]["stop_reason"] == "completed"
        assert by_trial[good]["epochs"] == 4
    for bad in (2, 3):  # pruned by the median pruner after the grace epoch, keeping a usable checkpoint
        assert by_trial[bad]["status"] == "succeeded", by_trial[bad]
        assert by_trial[bad]["stop_reason"] == "sweep_pruned"
        assert by_trial[bad]["epochs"] == 2
    assert {t["trial"] for t in trials[:2]} == {0, 1}
    assert sweep["best_job_id"] == trials[0]["job_id"] == sweep["best"]["job_id"]

    # Every trial is an ordinary job with the values it was given.
    for trial in trials:
        job = get(api_url, auth, trial["links"]["job"])
        assert job["sweep"] == {"id": sweep_id, "trial": trial["trial"]}
        assert job["spec"]["optimizer"]["learning_rate"] == trial["params"]["optimizer.learning_rate"]
        assert job["best"]["value"] == trial["value"] and job["best"]["monitor"] == "val_loss"
        rows = get(api_url, auth, f"{trial['links']['job']}/metrics")["epochs"]
        assert len(rows) == trial["epochs"]
        assert min(r["val_loss"] for r in rows) == trial["value"]

    best = get(api_url, auth, f"/v1/jobs/{sweep['best_job_id']}/checkpoints")["checkpoints"]
    best_row = next(c for c in best if c["is_best"])
    download = requests.get(api_url + sweep["links"]["best_checkpoint"], headers=auth, timeout=30)
    assert download.status_code == 200
    assert hashlib.sha256(download.content).hexdigest() == best_row["sha256"]

    worst = trials[-1]
    print(f"\nsweep {sweep_id}: best trial {trials[0]['trial']} val_loss {trials[0]['value']:.4f} "
          f"(lr {trials[0]['params']['optimizer.learning_rate']}, {trials[0]['epochs']} epochs) vs worst trial "
          f"{worst['trial']} val_loss {worst['value']:.4f} (lr {worst['params']['optimizer.learning_rate']}, "
          f"{worst['stop_reason']} after {worst['epochs']} epochs); {time.monotonic() - began:.1f} s")


def test_cancelling_a_sweep_cancels_its_trials_and_submits_no_more(
    api_url: str, auth: dict[str, str], worker: Any
) -> None:
    body = {
        "base": tiny_spec(training={"epochs": 3000, "batch_size": 8, "seed": 2}, diagnostics=FAST),
        "search": {"optimizer.learning_rate": {"type": "grid", "values": [0.01, 0.02, 0.03, 0.04]}},
        "objective": {"metric": "val_accuracy"},
        "parallelism": 2,
    }
    resp = requests.post(f"{api_url}/v1/sweeps", json=body, headers=auth, timeout=30)
    assert resp.status_code == 201, resp.text
    sweep = resp.json()
    assert sweep["objective"] == {"metric": "val_accuracy", "mode": "max"} and sweep["max_trials"] == 4
    first, second = (t["job_id"] for t in sorted(sweep["trials"], key=lambda t: t["trial"]))
    wait_until(lambda: get(api_url, auth, f"/v1/jobs/{first}")["progress"]["epoch"] >= 1, 90, 0.1,
               "the first trial to train an epoch")

    resp = requests.post(f"{api_url}/v1/sweeps/{sweep['id']}/cancel", headers=auth, timeout=10)
    assert resp.status_code == 202 and resp.json()["status"] == "cancelled"
    queued = get(api_url, auth, f"/v1/jobs/{second}")
    assert queued["status"] == "cancelled" and queued["attempts"] == 0
    running = wait_until(lambda: (j := get(api_url, auth, f"/v1/jobs/{first}"))["status"] in FINAL and j,
                         30, 0.1, "the running trial to stop")
    assert running["status"] == "cancelled" and running["progress"]["epoch"] < 3000
    time.sleep(2.5)  # two heartbeats of the test worker: its top-up must leave a cancelled sweep alone
    final = get(api_url, auth, f"/v1/sweeps/{sweep['id']}")
    assert final["status"] == "cancelled" and final["progress"]["submitted"] == 2
    assert final["progress"]["by_status"]["cancelled"] == 2
    assert requests.post(f"{api_url}/v1/sweeps/{sweep['id']}/cancel", headers=auth, timeout=10).status_code == 409
