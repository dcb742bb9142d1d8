"""Operations: /metrics from the real gunicorn (all worker processes), per-job logs of a real run, and
structured logs."""
from __future__ import annotations

import dataclasses
import io
import json
import logging
from pathlib import Path
from typing import Any

import requests
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from trainyard.db import Database
from trainyard.db.models import JOB_STATUSES, EpochMetrics, Job
from trainyard.logconfig import configure_logging, job_id_var
from tests.conftest import Proc, tiny_spec, wait_until


def scrape(url: str, **headers: str) -> dict[str, float]:
    resp = requests.get(url + "/metrics", headers=headers, timeout=30)
    assert resp.status_code == 200, resp.text
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            samples[f"{s.name}{{{labels}}}"] = s.value
    return samples


def run_job(api_url: str, auth: dict[str, str], **overrides: Any) -> dict[str, Any]:
    job = requests.post(f"{api_url}/v1/jobs", json=tiny_spec(**overrides), headers=auth, timeout=30).json()

    def ended() -> dict[str, Any] | None:
        j = requests.get(f"{api_url}/v1/jobs/{job['id']}", headers=auth, timeout=30).json()
        return j if j["status"] in ("succeeded", "failed", "cancelled") else None

    return wait_until(ended, 90, 0.2, "the job to end")


def test_metrics_count_jobs_epochs_and_every_api_workers_requests(
        api_url: str, auth: dict[str, str], worker: Any, settings: Any) -> None:
    assert run_job(api_url, auth)["status"] == "succeeded"
    before = scrape(api_url)
    latency = 'trainyard_http_request_duration_seconds_count{endpoint="/v1/jobs",method="GET",status="200"}'
    for _ in range(12):  # spread over gunicorn's two worker processes
        assert requests.get(f"{api_url}/v1/jobs", headers=auth, timeout=30).status_code == 200
    after = scrape(api_url)
    assert after[latency] - before.get(latency, 0) == 12

    db = Database(settings.database_url)
    try:
        with db.session() as s:
            by_status = dict(s.execute(select(Job.status, func.count()).group_by(Job.status)).all())
            # Epochs with a measured duration: other tests of the session write rows by hand, some without one.
            epochs = sum(isinstance((values or {}).get("seconds"), (int, float))
                         for values in s.execute(select(EpochMetrics.values)).scalars())
    finally:
        db.dispose()
    for status in JOB_STATUSES:
        assert after[f'trainyard_jobs{{status="{status}"}}'] == by_status.get(status, 0), status
    assert after["trainyard_epoch_duration_seconds_count{}"] == epochs > 0
    assert after['trainyard_epoch_duration_seconds_bucket{le="+Inf"}'] == epochs
    assert 'trainyard_queue_depth{queue="trainyard"}' in after


def test_queue_depth_on_the_embedded_broker_and_metrics_access_settings(
        settings: Any, auth: dict[str, str], tmp_path: Path) -> None:
    from service import create_app

    # An in-process API sending to an SQLite broker nothing consumes: the queue holds what was sent.
    embedded = dataclasses.replace(settings, broker_url=f"sqla+sqlite:///{tmp_path / 'broker.sqlite3'}")
    client = create_app(embedded).test_client()
    ids = [client.post("/v1/jobs", json=tiny_spec(), headers=auth).get_json()["id"] for _ in range(2)]
    text = client.get("/metrics").get_data(as_text=True)
    assert 'trainyard_queue_depth{queue="trainyard"} 2.0' in text
    for job_id in ids:
        client.post(f"/v1/jobs/{job_id}/cancel", headers=auth)

    locked = create_app(dataclasses.replace(settings, metrics_token="scrape-me")).test_client()
    assert locked.get("/metrics").status_code == 401
    assert locked.get("/metrics", headers={"Authorization": "Bearer scrape-me"}).status_code == 200
    off = create_app(dataclasses.replace(settings, metrics_enabled=False)).test_client()
    assert off.get("/metrics").status_code == 404


def test_a_real_runs_job_logs_in_order_paginated_and_tenant_scoped(
        api_url: str, auth: dict[str, str], other_auth: dict[str, str], worker: Any) -> None:
    job = run_job(api_url, auth, dataset={"id": "builtin:iris", "validation_split": 0.2, "normalize": "standardize"})
    url = f"{api_url}/v1/jobs/{job['id']}/logs"

    def complete() -> list[dict[str, Any]] | None:
        logs = requests.get(url, headers=auth, timeout=30).json()["logs"]
        return logs if any(line["message"].startswith("finished:") for line in logs) else None

    logs = wait_until(complete, 30, 0.2, "the run's last log line")
    messages = [line["message"] for line in logs]
    expected = ["attempt 1 started", "model built", "preflight on one batch: passed", "epoch 1: loss",
                "epoch 3: loss", "checkpoint of epoch", "finished: succeeded (completed) after 3 epochs"]
    missing = [e for e in expected if not any(m.startswith(e) for m in messages)]
    assert not missing, (missing, messages)
    positions = [next(i for i, m in enumerate(messages) if m.startswith(e)) for e in expected]
    assert positions[:5] == sorted(positions[:5]) and positions[-1] == max(positions), messages
    assert "val_loss" in messages[positions[3]]
    assert [line["seq"] for line in logs] == sorted(line["seq"] for line in logs)
    assert {line["worker_id"] for line in logs} == {logs[0]["worker_id"]} and logs[0]["worker_id"]

    pages: list[dict[str, Any]] = []
    after = 0
    while True:
        page = requests.get(url, params={"after": after, "limit": 2}, headers=auth, timeout=30).json()
        pages += page["logs"]
        if page["next_after"] is None:
            break
        after = page["next_after"]
    assert pages == logs
    assert requests.get(url, headers=other_auth, timeout=30).status_code == 404
    assert f"job_id={job['id']}" in worker.output()  # the worker's own log names the job on its lines


def test_json_logs_carry_the_job_id_and_the_request_id(
        tuned_api: tuple[str, Proc], auth: dict[str, str], settings: Any) -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    configure_logging(dataclasses.replace(settings, log_format="json"), stream=stream)
    try:
        token = job_id_var.set("job_123")
        logging.getLogger("workers.reporting").info("epoch %d: loss %.2f", 1, 0.5)
        job_id_var.reset(token)
        line = json.loads(stream.getvalue().splitlines()[-1])
        assert line["message"] == "epoch 1: loss 0.50" and line["job_id"] == "job_123"
        assert line["level"] == "INFO" and line["logger"] == "workers.reporting" and line["timestamp"].endswith("Z")
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])

    # The API under gunicorn with TRAINYARD_LOG_FORMAT=json: every line is one JSON object.
    url, api = tuned_api
    resp = requests.get(url + "/v1/jobs", headers={**auth, "X-Request-ID": "req-42"}, timeout=30)
    assert resp.headers["X-Request-ID"] == "req-42"
    assert requests.get(url + "/v1/jobs", headers=auth, timeout=30).headers["X-Request-ID"] != "req-42"

    def access_line() -> dict[str, Any] | None:
        lines = [json.loads(line) for line in api.output().splitlines() if line.startswith("{")]
        return next((e for e in lines if e.get("request_id") == "req-42"), None)

    entry = wait_until(access_line, 10, 0.2, "the request's log line")
    assert all(line.startswith("{") for line in api.output().splitlines() if line.strip()), api.output()
    assert entry["logger"] == "gunicorn.access" and "/v1/jobs" in entry["message"]
