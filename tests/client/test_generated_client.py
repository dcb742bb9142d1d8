"""A client generated from the served openapi.yaml, as a new user would make one, drives the live stack.

openapi-python-client generates a package from `GET /openapi.yaml` of the running API (gunicorn) with
client/openapi-python-client.yaml; the generator must report nothing (any schema it cannot read, it
drops with a warning). The tests then use only the generated functions and models: a dropped schema is a
missing class or a response the client cannot parse, and every response is parsed into its model.
Real Postgres, Redis, Celery worker and Keras; the jobs are iris-sized and train for two epochs.
"""
from __future__ import annotations

import hashlib
import importlib
import io
import subprocess
import sys
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import requests
import yaml

from tests.conftest import ROOT, subprocess_env, wait_until

PACKAGE = "trainyard_api"  # client/openapi-python-client.yaml's package_name_override
FINAL = {"succeeded", "failed", "cancelled"}


@pytest.fixture(scope="session")
def gen(api_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """The generated package, imported: `gen.models`, `gen.api` (its modules by operation), `gen.types`,
    `gen.errors` and `gen.Client`."""
    out = tmp_path_factory.mktemp("generated") / PACKAGE
    result = subprocess.run(
        [sys.executable, "-m", "openapi_python_client", "generate", "--url", f"{api_url}/openapi.yaml",
         "--meta", "none", "--output-path", str(out), "--config", str(ROOT / "client" / "openapi-python-client.yaml")],
        capture_output=True, text=True, timeout=300, env=subprocess_env({}), cwd=out.parent,
    )
    report = (result.stdout + result.stderr).strip()
    assert result.returncode == 0, report
    # A clean run prints only "Generating <path>": warnings name each schema or response it left out.
    assert report.splitlines() == [f"Generating {out}"], report

    sys.path.insert(0, str(out.parent))
    try:
        api = SimpleNamespace(**{
            name: importlib.import_module(f"{PACKAGE}.api.{group}.{name}")
            for group, names in {
                "jobs": ["submit_job", "get_job", "list_jobs", "get_job_metrics", "get_job_diagnostics"],
                "checkpoints": ["list_checkpoints", "download_best_checkpoint"],
                "datasets": ["upload_dataset", "list_datasets"],
                "sweeps": ["submit_sweep", "get_sweep", "list_sweeps"],
            }.items()
            for name in names
        })
        package = importlib.import_module(PACKAGE)
        yield SimpleNamespace(models=importlib.import_module(f"{PACKAGE}.models"), api=api,
                              types=importlib.import_module(f"{PACKAGE}.types"),
                              errors=importlib.import_module(f"{PACKAGE}.errors"),
                              Client=package.AuthenticatedClient)
    finally:
        sys.path.remove(str(out.parent))
        for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
            del sys.modules[name]


@pytest.fixture(scope="session")
def client_for(gen: SimpleNamespace, api_url: str, make_token: Any) -> Any:
    """A generated client for a tenant of its own (so listing its jobs is exact); undocumented statuses raise."""
    import httpx  # the generated client's HTTP library (openapi-python-client installs it)

    def make(tenant: str) -> Any:
        return gen.Client(base_url=api_url, token=make_token(tenant), timeout=httpx.Timeout(30),
                          raise_on_unexpected_status=True)

    return make


@pytest.fixture(scope="session")
def api_client(client_for: Any) -> Any:
    return client_for("generated-client")


def optimizers(m: Any) -> dict[str, Any]:
    """One of every optimizer type, each with a setting of its own."""
    return {
        "sgd": m.SgdOptimizer(type_="sgd", learning_rate=0.05, momentum=0.9, nesterov=True),
        "adam": m.AdamOptimizer(type_="adam", learning_rate=0.01, amsgrad=True),
        "adamw": m.AdamWOptimizer(type_="adamw", learning_rate=0.01, weight_decay=0.01),
        "nadam": m.NadamOptimizer(type_="nadam", learning_rate=0.01, beta_1=0.8),
        "rmsprop": m.RmspropOptimizer(type_="rmsprop", learning_rate=0.01, centered=True),
        "adagrad": m.AdagradOptimizer(type_="adagrad", learning_rate=0.05, initial_accumulator_value=0.2),
    }


def iris_spec(m: Any, name: str, optimizer: Any, units: int = 8) -> Any:
    return m.JobSpec(
        name=name,
        dataset=m.DatasetRef(id="builtin:iris", validation_split=0.2, normalize=m.DatasetRefNormalize.STANDARDIZE),
        model=m.Model(input_shape=[4], layers=[
            m.DenseLayer(type_="dense", units=units, activation=m.ActivationName.RELU),
            m.DenseLayer(type_="dense", units=3, activation=m.ActivationName.SOFTMAX),
        ]),
        loss=m.JobSpecLoss.SPARSE_CATEGORICAL_CROSSENTROPY,
        metrics=[m.JobSpecMetricsItem.ACCURACY],
        optimizer=optimizer,
        training=m.Training(epochs=2, batch_size=16, seed=1),
    )


@pytest.fixture(scope="session")
def finished_jobs(gen: SimpleNamespace, api_client: Any, api_url: str, worker: Any) -> dict[str, Any]:
    """One job per optimizer type the document offers, submitted with the generated models and polled
    until each ends: {optimizer type: the final `Job`}."""
    m = gen.models
    document = yaml.safe_load(requests.get(f"{api_url}/openapi.yaml", timeout=10).text)
    offered = set(document["components"]["schemas"]["Optimizer"]["discriminator"]["mapping"])
    chosen = optimizers(m)
    assert set(chosen) == offered, "a new optimizer type needs a job here"

    submitted = {}
    for kind, optimizer in chosen.items():
        job = gen.api.submit_job.sync(client=api_client, body=iris_spec(m, f"generated-{kind}", optimizer))
        assert isinstance(job, m.Job), job
        assert job.status in (m.JobStatus.QUEUED, m.JobStatus.RUNNING)
        submitted[kind] = job.id

    def all_ended() -> dict[str, Any] | None:
        jobs = {kind: gen.api.get_job.sync(job_id=job_id, client=api_client) for kind, job_id in submitted.items()}
        return jobs if all(job.status.value in FINAL for job in jobs.values()) else None

    return wait_until(all_ended, 300, 0.5, "the generated client's jobs to end")


def test_every_optimizer_submits_trains_and_reads_back_as_its_own_model(
    gen: SimpleNamespace, finished_jobs: dict[str, Any]
) -> None:
    m = gen.models
    expected = optimizers(m)
    for kind, job in finished_jobs.items():
        assert isinstance(job, m.Job)
        assert job.status == m.JobStatus.SUCCEEDED, (kind, job.error)
        assert job.progress.epoch == 2 and job.progress.epochs == 2
        # The stored spec parses back into the same optimizer class, with the value sent and the
        # defaults the server filled in.
        stored = job.spec.optimizer
        assert type(stored) is type(expected[kind]), (kind, stored)
        assert stored.learning_rate == expected[kind].learning_rate
        assert isinstance(stored.clipnorm, type(None))
        assert job.spec.schedule.type_ == "constant"
        assert isinstance(job.best, m.JobBestType1) and job.best.monitor == "val_loss"
    assert finished_jobs["adamw"].spec.optimizer.weight_decay == 0.01
    assert finished_jobs["nadam"].spec.optimizer.beta_1 == 0.8
    assert finished_jobs["nadam"].spec.optimizer.beta_2 == 0.999  # a default, filled in


def test_a_rejected_spec_answers_a_validation_problem(gen: SimpleNamespace, api_client: Any) -> None:
    m = gen.models
    bad = iris_spec(m, "generated-bad", m.AdamOptimizer(type_="adam"), units=0)
    problem = gen.api.submit_job.sync(client=api_client, body=bad)
    assert isinstance(problem, m.ValidationProblem), problem
    assert problem.status == 422
    assert "model.layers[0].units" in {error.field for error in problem.errors}


def test_list_pages_through_every_job_with_the_cursor(
    gen: SimpleNamespace, api_client: Any, finished_jobs: dict[str, Any]
) -> None:
    m = gen.models
    seen: list[str] = []
    cursor = gen.types.UNSET
    while True:
        page = gen.api.list_jobs.sync(client=api_client, limit=4, cursor=cursor, status=m.JobStatus.SUCCEEDED)
        assert isinstance(page, m.JobList), page
        assert all(isinstance(job, m.Job) for job in page.jobs)
        seen += [job.id for job in page.jobs]
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    # This tenant's succeeded jobs are exactly the optimizer jobs (newest first), over two pages.
    assert sorted(seen) == sorted(job.id for job in finished_jobs.values())
    assert len(seen) == len(set(seen)) > 4


def test_metrics_diagnostics_and_the_best_checkpoint(
    gen: SimpleNamespace, api_client: Any, finished_jobs: dict[str, Any]
) -> None:
    m = gen.models
    job = finished_jobs["adam"]

    metrics = gen.api.get_job_metrics.sync(job_id=job.id, client=api_client)
    assert isinstance(metrics, m.Metrics), metrics
    assert [row.epoch for row in metrics.epochs] == [1, 2]
    for row in metrics.epochs:
        assert isinstance(row.loss, float)
        assert {"accuracy", "val_loss", "val_accuracy", "learning_rate"} <= set(row.additional_properties)
        assert row.additional_properties["learning_rate"] == pytest.approx(0.01)

    diagnostics = gen.api.get_job_diagnostics.sync(job_id=job.id, client=api_client)
    assert isinstance(diagnostics, m.Diagnostics), diagnostics
    assert [(v.layer, v.name) for v in diagnostics.variables] == [
        ("dense_1", "kernel"), ("dense_1", "bias"), ("dense_2", "kernel"), ("dense_2", "bias")]
    assert [row.epoch for row in diagnostics.epochs] == [1, 2]
    assert all(isinstance(v, m.VariableDynamics) for row in diagnostics.epochs for v in row.variables)
    assert all(isinstance(finding, m.Finding) for finding in diagnostics.findings)

    checkpoints = gen.api.list_checkpoints.sync(job_id=job.id, client=api_client)
    assert isinstance(checkpoints, m.CheckpointList), checkpoints
    (best,) = [c for c in checkpoints.checkpoints if c.is_best]
    assert best.epoch == job.best.epoch

    # Raw bytes: the generated function hands back the response, whose content is the file.
    download = gen.api.download_best_checkpoint.sync_detailed(job_id=job.id, client=api_client)
    assert download.status_code == 200
    assert hashlib.sha256(download.content).hexdigest() == best.sha256
    assert download.headers["ETag"] == f'"{best.sha256}"'
    assert download.content[:2] == b"PK"  # a .keras file is a zip archive


def tiny_npz() -> bytes:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3)).astype(np.float32)
    buf = io.BytesIO()
    np.savez(buf, x_train=x[:48], y_train=(x[:48, 0] > 0).astype(np.int64),
             x_test=x[48:], y_test=(x[48:, 0] > 0).astype(np.int64))
    return buf.getvalue()


def test_upload_a_data_set_and_sweep_over_it(gen: SimpleNamespace, client_for: Any, worker: Any) -> None:
    m = gen.models
    own = client_for("generated-client-sweeps")  # a tenant of its own: its trials stay out of the job list above
    body = m.UploadDatasetBody(file=gen.types.File(payload=io.BytesIO(tiny_npz()), file_name="tiny.npz",
                                                   mime_type="application/octet-stream"))
    dataset = gen.api.upload_dataset.sync(client=own, body=body)
    assert isinstance(dataset, m.UploadedDataset), dataset
    assert dataset.builtin is False and dataset.format_ == m.UploadedDatasetFormat.NPZ
    assert (dataset.splits.train, dataset.splits.val, dataset.splits.test) == (48, None, 12)
    assert dataset.input_shape == [3]
    # The same file as the body itself, its name as a query parameter: the generated client sends both forms.
    as_body = gen.api.upload_dataset.sync(client=own, body=gen.types.File(payload=io.BytesIO(tiny_npz())),
                                          name="tiny-body.npz")
    assert isinstance(as_body, m.UploadedDataset), as_body
    assert (as_body.name, as_body.sha256, as_body.splits.test) == ("tiny-body.npz", dataset.sha256, 12)

    listed = gen.api.list_datasets.sync(client=own)
    assert isinstance(listed, m.DatasetList), listed
    kinds = {d.id: type(d) for d in listed.datasets}
    assert kinds[dataset.id] is m.UploadedDataset and kinds["builtin:digits"] is m.BuiltinDataset

    base = m.JobSpec(
        name="generated-sweep",
        dataset=m.DatasetRef(id=dataset.id, validation_split=0.25),
        model=m.Model(input_shape=[3], layers=[m.DenseLayer(type_="dense", units=1,
                                                            activation=m.ActivationName.SIGMOID)]),
        loss=m.JobSpecLoss.BINARY_CROSSENTROPY,
        metrics=[m.JobSpecMetricsItem.BINARY_ACCURACY],
        training=m.Training(epochs=2, batch_size=16, seed=1),
        diagnostics=m.JobSpecDiagnostics(enabled=False, preflight=False),
    )
    search = m.SweepRequestSearch()
    search["optimizer"] = m.SearchValues(type_=m.SearchValuesType.CHOICE, values=[
        m.SgdOptimizer(type_="sgd", learning_rate=0.1).to_dict(), m.NadamOptimizer(type_="nadam").to_dict()])
    search["training.batch_size"] = m.SearchRange(type_=m.SearchRangeType.INT_UNIFORM, low=8, high=16)
    request = m.SweepRequest(base=base, search=search, max_trials=2, parallelism=2, seed=3,
                             objective=m.SweepObjective(metric="val_loss", mode=m.SweepObjectiveMode.MIN))
    sweep = gen.api.submit_sweep.sync(client=own, body=request)
    assert isinstance(sweep, m.Sweep), sweep
    assert sweep.progress.submitted == 2 and sweep.early_stopping is None
    assert isinstance(sweep.search["training.batch_size"], m.SearchRange)
    assert isinstance(sweep.search["optimizer"], m.SearchValues)

    def ended() -> Any:
        current = gen.api.get_sweep.sync(sweep_id=sweep.id, client=own)
        assert isinstance(current, m.Sweep), current
        return current if current.status != m.SweepStatus.RUNNING else None

    done = wait_until(ended, 300, 0.5, "the generated client's sweep to end")
    assert done.status == m.SweepStatus.COMPLETED, done.error
    assert [trial.rank for trial in done.trials] == [1, 2]
    assert all(isinstance(trial, m.SweepTrial) and trial.status == m.JobStatus.SUCCEEDED for trial in done.trials)
    assert isinstance(done.best, m.SweepTrial) and done.best_job_id == done.best.job_id == done.trials[0].job_id
    for trial in done.trials:
        assert trial.params["optimizer"]["type"] in ("sgd", "nadam")
        assert 8 <= trial.params["training.batch_size"] <= 16

    sweeps = gen.api.list_sweeps.sync(client=own)
    assert isinstance(sweeps, m.SweepList), sweeps
    assert [s.id for s in sweeps.sweeps] == [sweep.id] and isinstance(sweeps.sweeps[0], m.SweepSummary)
