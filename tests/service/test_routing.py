"""Jobs go to the Celery queue of their resource class; workers take only the classes they serve; a class
no configured worker serves is refused at submission; a queued job shows its place in its queue."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis

from service import create_app
from trainyard.settings import Settings
from tests.conftest import Proc, start_worker, tiny_spec, wait_until


def test_a_class_no_worker_serves_is_refused_with_422(client: Any, auth: dict[str, str]) -> None:
    # The session's API is configured with CPU workers only (the default TRAINYARD_RESOURCE_CLASSES=cpu).
    for gpus in (1, 2):
        resp = client.post("/v1/jobs", json=tiny_spec(resources={"gpus": gpus}), headers=auth)
        assert resp.status_code == 422, resp.get_json()
        assert [e["field"] for e in resp.get_json()["errors"]] == ["resources.gpus"]
        assert "No worker here serves" in resp.get_json()["detail"]


def test_jobs_route_by_class_and_show_their_queue_position(
    service_env: dict[str, str], settings: Any, worker: Proc, redis_url: str, tmp_path: Path,
) -> None:
    gpu_settings = Settings.from_env({**service_env, "TRAINYARD_RESOURCE_CLASSES": "cpu,gpu"})
    app = create_app(gpu_settings)
    client = app.test_client()
    from service.auth import create_token

    with app.extensions["trainyard"].db.session() as s:
        auth = {"Authorization": f"Bearer {create_token(s, 'routing').token}"}

    def get(job_id: str) -> dict[str, Any]:
        return client.get(f"/v1/jobs/{job_id}", headers=auth).get_json()

    gpu_jobs = []
    for n in range(1, 4):
        resp = client.post("/v1/jobs", json=tiny_spec(name=f"gpu-{n}", resources={"gpus": 1}), headers=auth)
        assert resp.status_code == 201, resp.get_json()
        body = resp.get_json()
        assert body["resources"] == {"gpus": 1, "class": "gpu"}
        assert body["queue"] == {"name": "trainyard.gpu", "position": n}
        gpu_jobs.append(body["id"])
    # Celery routing: the messages wait in the gpu class's own Redis list.
    waiting = b"".join(redis.Redis.from_url(redis_url).lrange("trainyard.gpu", 0, -1))
    assert all(job_id.encode() in waiting for job_id in gpu_jobs)

    # The session's worker serves cpu (and the default queue): it runs the cpu job, never the gpu ones.
    cpu_job = client.post("/v1/jobs", json=tiny_spec(resources={"gpus": 0}), headers=auth).get_json()
    assert cpu_job["resources"]["class"] == "cpu"
    wait_until(lambda: get(cpu_job["id"])["status"] == "succeeded", 90, 0.2, "the cpu job")
    assert [get(j)["status"] for j in gpu_jobs] == ["queued"] * 3

    client.post(f"/v1/jobs/{gpu_jobs[0]}/cancel", headers=auth)
    assert get(gpu_jobs[0])["queue"] is None
    assert [get(j)["queue"]["position"] for j in gpu_jobs[1:]] == [1, 2]

    # A worker serving the gpu class takes them in order. (No GPU on this machine: one-GPU jobs take the
    # single-device path, which runs on the CPU; what is tested here is the routing.)
    env = {**service_env, "TRAINYARD_WORKER_GPUS": "1", "TRAINYARD_WORKER_NAME": "gpubox"}
    gpu_worker = start_worker(env, tmp_path / "gpu-worker.log", settings)
    try:
        wait_until(lambda: all(get(j)["status"] == "succeeded" for j in gpu_jobs[1:]), 120, 0.3, "the gpu jobs")
    finally:
        gpu_worker.stop()
    from trainyard.db.models import Job

    with app.extensions["trainyard"].db.session() as s:
        rows = [s.get(Job, j) for j in gpu_jobs]
        assert rows[0].attempts == 0  # cancelled while queued: never trained
        assert [r.worker_id.split("@")[0] for r in rows[1:]] == ["gpubox", "gpubox"]
        assert rows[1].started_at < rows[2].started_at
        cpu_row = s.get(Job, cpu_job["id"])
        assert not cpu_row.worker_id.startswith("gpubox@")
    assert get(gpu_jobs[1])["queue"] is None
    app.extensions["trainyard"].db.dispose()


@pytest.mark.parametrize("env, error", [
    ({"TRAINYARD_WORKER_CLASSES": "gpu"}, "TRAINYARD_WORKER_GPUS is 0"),
    ({"TRAINYARD_RESOURCE_CLASSES": "cpu,tpu"}, "unknown resource class 'tpu'"),
    ({"TRAINYARD_WORKER_GPUS": "2", "TRAINYARD_WORKER_CLASSES": "gpu-2,gpu-3"}, "lists gpu-3"),
])
def test_resource_settings_fail_fast(env: dict[str, str], error: str) -> None:
    from trainyard.settings import SettingsError

    with pytest.raises(SettingsError, match=error):
        Settings.from_env(env)


def test_worker_queues_default_to_its_class_and_the_default_queue() -> None:
    from trainyard.resources import worker_queues

    assert worker_queues(Settings.from_env({}).worker_classes) == ["trainyard.cpu", "trainyard"]
    two = Settings.from_env({"TRAINYARD_WORKER_GPUS": "2", "TRAINYARD_WORKER_CLASSES": "gpu-2,gpu"})
    assert worker_queues(two.worker_classes) == ["trainyard.gpu-2", "trainyard.gpu", "trainyard"]
