"""Exports against a real worker: TensorBoard event files made by the API from the job's rows, and the
SavedModel the worker makes of the best checkpoint, both read back with the real TensorBoard and
TensorFlow readers."""
from __future__ import annotations

import io
import math
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import tiny_spec, wait_until
from tests.service.test_openapi import Api, openapi  # noqa: F401  (the fixture)

FINAL = ("succeeded", "failed", "cancelled")


@pytest.fixture()
def api(client: Any, openapi: Any, auth: dict[str, str]) -> Api:  # noqa: F811
    return Api(client, openapi, auth)


@pytest.fixture(scope="module")
def finished_job(app: Any, auth: dict[str, str], worker: Any) -> dict[str, Any]:
    client = app.test_client()
    spec = tiny_spec(dataset={"id": "builtin:iris", "validation_split": 0.2, "normalize": "standardize"})
    job = client.post("/v1/jobs", json=spec, headers=auth).get_json()

    def ended() -> dict[str, Any] | None:
        body = client.get(f"/v1/jobs/{job['id']}", headers=auth).get_json()
        return body if body["status"] in FINAL else None

    done = wait_until(ended, 300, 0.3, "the job to finish")
    assert done["status"] == "succeeded", done
    return done


def _extract(data: bytes, into: Path) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        names = tar.getnames()
        tar.extractall(into, filter="data")
    return names


def test_tensorboard_event_files_hold_every_epoch(api: Api, finished_job: dict[str, Any], tmp_path: Path,
                                                   other_auth: dict[str, str]) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    job_id = finished_job["id"]
    resp = api("GET", f"/v1/jobs/{job_id}/tensorboard", 200)
    assert resp.headers["Content-Disposition"] == f'attachment; filename="{job_id}-tensorboard.tar.gz"'
    names = _extract(resp.get_data(), tmp_path)
    assert {n.rsplit("/", 1)[0] for n in names if "tfevents" in n} == {f"{job_id}/train", f"{job_id}/validation"}

    metrics = api("GET", f"/v1/jobs/{job_id}/metrics", 200).get_json()["epochs"]
    diagnostics = api("GET", f"/v1/jobs/{job_id}/diagnostics", 200).get_json()["epochs"]
    assert [m["epoch"] for m in metrics] == [1, 2, 3]

    def scalars(run: str) -> EventAccumulator:
        acc = EventAccumulator(str(tmp_path / job_id / run))
        acc.Reload()
        return acc

    train, validation = scalars("train"), scalars("validation")

    def curve(acc: EventAccumulator, tag: str) -> list[tuple[int, float]]:
        return [(e.step, e.value) for e in acc.Scalars(tag)]

    for key, acc, tag in [("loss", train, "epoch_loss"), ("accuracy", train, "epoch_accuracy"),
                          ("learning_rate", train, "epoch_learning_rate"),
                          ("val_loss", validation, "epoch_loss"), ("val_accuracy", validation, "epoch_accuracy")]:
        got = curve(acc, tag)
        assert [s for s, _ in got] == [m["epoch"] for m in metrics], tag
        assert all(math.isclose(v, m[key], rel_tol=1e-6) for (_, v), m in zip(got, metrics)), (tag, got)
    # Every variable's update ratio and gradient norm, per epoch.
    for var in diagnostics[0]["variables"]:
        for field in ("update_ratio", "grad_norm"):
            got = curve(train, f"{field}/{var['layer']}/{var['name']}")
            want = [(d["epoch"], next(v[field] for v in d["variables"]
                                      if (v["layer"], v["name"]) == (var["layer"], var["name"])))
                    for d in diagnostics]
            assert [s for s, _ in got] == [s for s, _ in want]
            assert np.allclose([v for _, v in got], [v for _, v in want], rtol=1e-6)

    api("GET", f"/v1/jobs/{job_id}/tensorboard", 404, headers=other_auth)


def test_savedmodel_predicts_like_the_keras_checkpoint(api: Api, finished_job: dict[str, Any],
                                                       tmp_path: Path) -> None:
    import keras
    import tensorflow as tf

    job_id = finished_job["id"]
    keras_file = api("GET", f"/v1/jobs/{job_id}/checkpoints/best", 200)
    resp = api("GET", f"/v1/jobs/{job_id}/checkpoints/best", 200, query={"format": "savedmodel"})
    assert resp.headers["Content-Disposition"] == (
        f'attachment; filename="{job_id}-epoch{finished_job["best"]["epoch"]:04d}.savedmodel.tar.gz"')
    data = resp.get_data()
    etag = resp.headers["ETag"]
    api("GET", f"/v1/jobs/{job_id}/checkpoints/best", 304, query={"format": "savedmodel"},
        headers={"If-None-Match": etag})
    assert etag != keras_file.headers["ETag"]

    _extract(data, tmp_path)
    served = tf.saved_model.load(str(tmp_path / "savedmodel"))
    (tmp_path / "best.keras").write_bytes(keras_file.get_data())
    model = keras.models.load_model(tmp_path / "best.keras")
    x = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
    outputs = served.signatures["serving_default"](tf.constant(x))
    assert np.allclose(next(iter(outputs.values())).numpy(), model.predict(x, verbose=0), atol=1e-6)


def test_download_formats_and_when_exports_exist(api: Api, finished_job: dict[str, Any], worker: Any) -> None:
    job_id = finished_job["id"]
    resp = api("GET", f"/v1/jobs/{job_id}/checkpoints/best", 422, query={"format": "onnx"}, request_valid=False)
    assert resp.get_json()["errors"] == [{"field": "query.format", "message": "Must be one of: keras, savedmodel."}]
    assert api("GET", f"/v1/jobs/{job_id}/checkpoints/best", 200, query={"format": "keras"}).get_data()[:2] == b"PK"

    # A job that has not ended has no export yet (409); once cancelled it never gets one (404).
    long = api("POST", "/v1/jobs", 201, json_body=tiny_spec(training={"epochs": 2000, "batch_size": 16})).get_json()
    resp = api("GET", f"/v1/jobs/{long['id']}/checkpoints/best", 409, query={"format": "savedmodel"})
    assert "when the job succeeds" in resp.get_json()["detail"]
    api("POST", f"/v1/jobs/{long['id']}/cancel", 202)
    wait_until(lambda: api("GET", f"/v1/jobs/{long['id']}", 200).get_json()["status"] in FINAL, 120, 0.3,
               "the cancelled job to end")
    api("GET", f"/v1/jobs/{long['id']}/checkpoints/best", 404, query={"format": "savedmodel"})
    api("GET", f"/v1/jobs/{long['id']}/tensorboard", 200)
    api("DELETE", f"/v1/jobs/{long['id']}", 204)


def test_deleting_a_job_deletes_its_export(api: Api, app: Any, finished_job: dict[str, Any]) -> None:
    # Last in this module: it deletes the job the tests above share.
    from sqlalchemy import select

    from trainyard.db.models import Artifact

    def stored() -> list[str]:
        with app.extensions["trainyard"].db.session() as s:
            return list(s.execute(select(Artifact.key).where(Artifact.key.like(f"jobs/{finished_job['id']}/%"))).scalars())

    assert any(key.endswith(".savedmodel.tar.gz") for key in stored())
    api("DELETE", f"/v1/jobs/{finished_job['id']}", 204)
    assert stored() == []
