"""A job's `eta` through the real worker: a running job's from its recent epoch times, bounded by early
stopping when patience ends the run sooner (and the run then ends where the bound said), and a queued job's
from its queue position and the run times of the tenant's recent jobs of its class."""
from __future__ import annotations

import math
import statistics
from datetime import datetime, timezone
from typing import Any

import pytest

from sqlalchemy import func, select

from tests.conftest import tiny_spec, wait_until
from trainyard.db.models import Job


def _time(iso: str) -> datetime:
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))


@pytest.fixture()
def api(client: Any, make_token: Any) -> Any:
    """A tenant of its own, so its history of finished jobs is only this module's."""
    auth = {"Authorization": f"Bearer {make_token('eta-tenant')}"}
    submitted: list[str] = []

    class Api:
        def submit(self, spec: dict[str, Any]) -> dict[str, Any]:
            resp = client.post("/v1/jobs", json=spec, headers=auth)
            assert resp.status_code == 201, resp.get_json()
            submitted.append(resp.get_json()["id"])
            return resp.get_json()

        def get(self, job_id: str) -> dict[str, Any]:
            return client.get(f"/v1/jobs/{job_id}", headers=auth).get_json()

        def list(self) -> list[dict[str, Any]]:
            return client.get("/v1/jobs?limit=200", headers=auth).get_json()["jobs"]

        def metrics(self, job_id: str) -> list[dict[str, Any]]:
            return client.get(f"/v1/jobs/{job_id}/metrics", headers=auth).get_json()["epochs"]

    yield Api()
    for job_id in submitted:
        client.post(f"/v1/jobs/{job_id}/cancel", headers=auth)
    for job_id in submitted:
        wait_until(lambda: client.get(f"/v1/jobs/{job_id}", headers=auth).get_json()["status"]
                   in ("succeeded", "failed", "cancelled"), 60, 0.2, f"{job_id} to end")


def test_running_and_queued_jobs_carry_an_eta(api: Any, worker: Any, app: Any) -> None:
    history = [api.submit(tiny_spec(name=f"eta-history-{i}"))["id"] for i in range(3)]
    wait_until(lambda: all(api.get(j)["status"] == "succeeded" for j in history), 120, 0.2, "the short jobs")
    finished = [api.get(j) for j in history]
    assert all(job["eta"] is None for job in finished)  # ended: no estimate
    run_time = statistics.median((_time(j["finished_at"]) - _time(j["started_at"])).total_seconds() for j in finished)

    long = api.submit(tiny_spec(name="eta-long", training={"epochs": 5000, "batch_size": 8, "seed": 2}))["id"]
    wait_until(lambda: api.get(long)["progress"]["epoch"] >= 6, 120, 0.1, "six epochs")
    before = datetime.now(timezone.utc)
    job = api.get(long)
    done, eta = job["progress"]["epoch"], job["eta"]
    assert job["status"] == "running"
    assert eta["basis"] == "recent_epochs" and eta["epochs_left"] == 5000 - done
    assert eta["seconds"] > 0 and _time(eta["at"]) > before
    assert eta["full_length_seconds"] == eta["seconds"]
    # The median of its last five epoch times, for every epoch left, counted from the end of the last one.
    per_epoch = statistics.median(r["seconds"] for r in api.metrics(long)[done - 5:done])
    assert abs(eta["seconds"] - eta["epochs_left"] * per_epoch) <= per_epoch + 1

    # A queued job's estimate counts the jobs of its class running now as the workers that serve it (a queue
    # with jobs waiting keeps every worker busy). In the session's database that is the long job and any
    # running rows earlier tests left (rows written as running, jobs still ending after a cancel).
    def running() -> int:
        with app.extensions["trainyard"].db.session() as s:
            return s.execute(select(func.count()).select_from(Job).where(Job.status == "running")).scalar_one()

    # The worker trains one job at a time: these wait behind the long one, in its class's queue.
    queued = [api.submit(tiny_spec(name=f"eta-queued-{i}"))["id"] for i in range(2)]
    for position, job_id in enumerate(queued, 1):
        before = datetime.now(timezone.utc)
        job = api.get(job_id)
        assert job["status"] == "queued" and job["queue"]["position"] == position
        # With one worker (only the long job running) this one ends after `position` typical runs.
        workers = running()
        assert job["eta"]["basis"] == "queue_position"
        assert job["eta"]["seconds"] == round(math.ceil(position / workers) * run_time), workers
        assert job["eta"]["epochs_left"] == 3
        assert _time(job["eta"]["at"]) >= before.replace(microsecond=0)
    # The list carries the same estimates.
    listed = {j["id"]: j for j in api.list()}
    assert listed[queued[1]]["eta"]["seconds"] == round(math.ceil(2 / running()) * run_time)
    assert listed[long]["eta"]["basis"] == "recent_epochs"
    assert all(listed[j]["eta"] is None for j in history)


def test_early_stopping_bounds_a_running_jobs_eta_and_ends_it_there(api: Any, worker: Any) -> None:
    patience = 30
    # min_delta 1e9: no epoch after the first improves, so early stopping ends the run after epoch 31.
    spec = tiny_spec(name="eta-early-stopping", training={"epochs": 5000, "batch_size": 8, "seed": 3},
                     callbacks={"early_stopping": {"monitor": "loss", "patience": patience, "min_delta": 1e9}})
    job_id = api.submit(spec)["id"]
    seen: list[dict[str, Any]] = []

    def bounded() -> bool:
        job = api.get(job_id)
        if job["status"] == "running" and 3 <= job["progress"]["epoch"] <= patience - 3:
            seen.append(job)
        return len(seen) >= 3 or job["status"] != "running" and job["progress"]["epoch"] > 0

    wait_until(bounded, 120, 0.05, "a few epochs")
    assert seen, "the job ended before it could be polled while running"
    for job in seen:
        done, eta = job["progress"]["epoch"], job["eta"]
        assert eta["basis"] == "early_stopping"
        assert eta["epochs_left"] == patience - (done - 1)  # epochs since the best: every one after the first
        # Whole seconds: the bound's few fast epochs may round to 0; the full length (thousands of epochs) not.
        assert 0 <= eta["seconds"] < eta["full_length_seconds"], job["eta"]
    wait_until(lambda: api.get(job_id)["status"] != "running", 120, 0.2, "early stopping")
    job = api.get(job_id)
    assert job["status"] == "succeeded" and job["stop_reason"] == "early_stopping"
    assert job["progress"]["epoch"] == patience + 1  # where the bound said it would end
    assert job["eta"] is None
