"""Failed jobs say why, through the whole stack: the real worker process fails them, the API shows
`error: {"code", "message"}` with a code from trainyard/job_errors.py and a message naming the cause.

A job the API accepts cannot reach most of these paths (that is the point of validation), so those jobs are
written to the database as an older release or a damaged row would leave them, and reach the worker through
the outbox, as a job the broker missed does."""
from __future__ import annotations

import copy
from datetime import timedelta
from typing import Any

import pytest
import requests

from trainyard.db.models import Job, utcnow
from trainyard.job_errors import JobError
from tests.conftest import tiny_spec
from tests.service.test_training_e2e import wait_final


@pytest.fixture(scope="module")
def template(app: Any, api_url: str, auth: dict[str, str], worker: Any) -> Job:
    """A job the API accepted and the worker trained: its row gives the tenant and a normalised spec."""
    resp = requests.post(f"{api_url}/v1/jobs", json=tiny_spec(), headers=auth, timeout=10)
    assert resp.status_code == 201, resp.text
    assert wait_final(api_url, auth, resp.json()["id"])["status"] == "succeeded"
    with app.extensions["trainyard"].db.session() as s:
        return s.get(Job, resp.json()["id"])


def _queue_row(app: Any, template: Job, spec: dict[str, Any]) -> str:
    """A queued job the broker never got: the workers' reaper sends it (the outbox), a worker runs it."""
    with app.extensions["trainyard"].db.session() as s:
        job = Job(tenant_id=template.tenant_id, name="damaged", status="queued", spec=spec, epochs=3,
                  created_at=utcnow() - timedelta(seconds=30))
        s.add(job)
        s.flush()
        return job.id


def test_an_engine_exception_fails_the_job_with_training_error_naming_it(
        app: Any, api_url: str, auth: dict[str, str], template: Job) -> None:
    spec = copy.deepcopy(template.spec)
    spec["model"]["input_shape"] = [5]  # iris has 4 features: Keras refuses the data at fit
    job = wait_final(api_url, auth, _queue_row(app, template, spec))
    assert (job["status"], job["stop_reason"]) == ("failed", "error"), job
    assert job["error"]["code"] == JobError.TRAINING_ERROR
    message = job["error"]["message"]
    assert message.startswith("Training stopped with an error: ValueError: "), message
    assert "Traceback" not in message and "\n" not in message


def test_a_missing_data_set_fails_the_job_with_dataset_unavailable(
        app: Any, api_url: str, auth: dict[str, str], template: Job) -> None:
    spec = copy.deepcopy(template.spec)
    spec["dataset"]["id"] = "ds_" + "0" * 32
    job = wait_final(api_url, auth, _queue_row(app, template, spec))
    assert job["status"] == "failed" and job["error"]["code"] == JobError.DATASET_UNAVAILABLE, job
    assert f"Data set {spec['dataset']['id']} was deleted" in job["error"]["message"]


def test_a_damaged_row_fails_the_job_with_worker_error_naming_it(
        app: Any, api_url: str, auth: dict[str, str], template: Job) -> None:
    job = wait_final(api_url, auth, _queue_row(app, template, {"name": "no dataset, no model"}))
    assert job["status"] == "failed" and job["error"]["code"] == JobError.WORKER_ERROR, job
    assert job["error"]["message"] == "The worker could not prepare the job: KeyError: 'dataset'"


def test_a_model_nothing_can_learn_in_fails_with_no_gradients(api_url: str, auth: dict[str, str],
                                                               worker: Any) -> None:
    # Accepted by the API: a zero-initialised relu output layer; preflight finds no gradient anywhere.
    spec = tiny_spec(model={"input_shape": [4], "layers": [
        {"type": "dense", "units": 8, "activation": "relu"},
        {"type": "dense", "units": 1, "activation": "relu", "kernel_initializer": "zeros"}]},
        loss="mse", metrics=[])
    resp = requests.post(f"{api_url}/v1/jobs", json=spec, headers=auth, timeout=10)
    assert resp.status_code == 201, resp.text
    job = wait_final(api_url, auth, resp.json()["id"])
    assert job["status"] == "failed" and job["error"]["code"] == JobError.NO_GRADIENTS, job
    assert "no trainable variable gets a gradient" in job["error"]["message"]
