"""Exports against a real worker: TensorBoard event files made by the API from the job's rows, and the
exports the worker makes of the best checkpoint (SavedModel, keras-serving, ONNX), read back with the real
TensorBoard, TensorFlow, Keras and ONNX Runtime readers: each takes the raw features and answers what the
trained `.keras` model answers on normalised ones (in raw target units), and carries the model card."""
from __future__ import annotations

import io
import json
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


FORMATS = ("savedmodel", "keras-serving", "onnx")


def _wait_final(client: Any, auth: dict[str, str], job_id: str) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        body = client.get(f"/v1/jobs/{job_id}", headers=auth).get_json()
        return body if body["status"] in FINAL else None

    done = wait_until(ended, 300, 0.3, "the job to finish")
    assert done["status"] == "succeeded", done
    return done


@pytest.fixture(scope="module")
def finished_job(app: Any, auth: dict[str, str], exporting_worker: Any) -> dict[str, Any]:
    """A classification job on the digits (standardised inputs, some features constant)."""
    client = app.test_client()
    spec = tiny_spec(dataset={"id": "builtin:digits", "validation_split": 0.2, "normalize": "standardize"},
                     model={"input_shape": [64], "layers": [{"type": "dense", "units": 32, "activation": "relu"},
                                                            {"type": "dense", "units": 10, "activation": "softmax"}]})
    job = client.post("/v1/jobs", json=spec, headers=auth).get_json()
    return _wait_final(client, auth, job["id"])


def _npz(**arrays: Any) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


REGRESSION_RNG = 11


def _regression_arrays() -> dict[str, np.ndarray]:
    """Features far from standard (mean 50, std 20) and targets in the hundreds: predictions on raw inputs
    are only right if both normalisations are in the graph."""
    rng = np.random.default_rng(REGRESSION_RNG)
    x = rng.normal(loc=50.0, scale=20.0, size=(240, 4)).astype(np.float32)
    y = (x @ np.array([3.0, -2.0, 1.0, 0.5], dtype=np.float32) + 400.0).astype(np.float32)
    return {"x_train": x[:200], "y_train": y[:200], "x_test": x[200:], "y_test": y[200:]}


@pytest.fixture(scope="module")
def regression_job(app: Any, auth: dict[str, str], exporting_worker: Any) -> dict[str, Any]:
    """A regression job on an uploaded data set, inputs and targets standardised."""
    client = app.test_client()
    upload = client.post("/v1/datasets", headers=auth, content_type="multipart/form-data",
                         data={"file": (io.BytesIO(_npz(**_regression_arrays())), "linear.npz")})
    assert upload.status_code == 201, upload.get_data(as_text=True)
    dataset = upload.get_json()
    spec = tiny_spec(dataset={"id": dataset["id"], "validation_split": 0.2, "normalize": "standardize",
                              "normalize_targets": "standardize"},
                     model={"input_shape": [4], "layers": [{"type": "dense", "units": 8, "activation": "relu"},
                                                           {"type": "dense", "units": 1}]},
                     loss="mse", metrics=["mae"])
    resp = client.post("/v1/jobs", json=spec, headers=auth)
    assert resp.status_code == 201, resp.get_data(as_text=True)
    return {**_wait_final(client, auth, resp.get_json()["id"]), "dataset": dataset}


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


def _trained_predictions(api: Api, job: dict[str, Any], raw: np.ndarray, tmp_path: Path) -> np.ndarray:
    """The trained `.keras` model on `raw` normalised with the job's statistics, in raw target units."""
    import keras

    (tmp_path / "best.keras").write_bytes(api("GET", f"/v1/jobs/{job['id']}/checkpoints/best", 200).get_data())
    model = keras.models.load_model(tmp_path / "best.keras")
    norm = job["model"]["normalization"]
    inputs, targets = norm["inputs"], norm["targets"]
    assert inputs["method"] == "standardize"
    normalised = (raw - np.asarray(inputs["mean"], np.float32)) / np.asarray(inputs["std"], np.float32)
    predicted = model.predict(normalised, verbose=0)
    if targets is not None:
        predicted = predicted * np.float32(targets["std"]) + np.float32(targets["mean"])
    return predicted


def _served_predictions(api: Api, job: dict[str, Any], raw: np.ndarray, tmp_path: Path) -> dict[str, Any]:
    """Each export of `job` downloaded, unpacked and run on `raw` by its own runtime; {format: (predictions,
    card.json)}."""
    import keras
    import onnxruntime
    import tensorflow as tf

    out = {}
    for fmt in FORMATS:
        resp = api("GET", f"/v1/jobs/{job['id']}/checkpoints/best", 200, query={"format": fmt})
        assert resp.headers["Content-Disposition"] == (
            f'attachment; filename="{job["id"]}-epoch{job["best"]["epoch"]:04d}.{fmt}.tar.gz"')
        assert resp.mimetype == "application/gzip"
        folder = tmp_path / fmt
        names = _extract(resp.get_data(), folder)
        card = json.loads((folder / "card.json").read_text())
        if fmt == "savedmodel":
            assert {n.split("/")[0] for n in names} == {"savedmodel", "card.json"}
            # As TensorFlow Serving calls it: the serving_default signature, by input name.
            served = tf.saved_model.load(str(folder / "savedmodel"))
            predicted = served.signatures["serving_default"](features=tf.constant(raw))["output_0"].numpy()
        elif fmt == "keras-serving":
            assert sorted(names) == ["card.json", "model.keras"]
            predicted = keras.models.load_model(folder / "model.keras", safe_mode=True).predict(raw, verbose=0)
        else:
            assert sorted(names) == ["card.json", "model.onnx"]
            session = onnxruntime.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
            assert [i.name for i in session.get_inputs()] == ["features"]
            [predicted] = session.run(None, {"features": raw})
        out[fmt] = (predicted, card)
    return out


def test_every_export_predicts_on_raw_digits_like_the_trained_model(api: Api, finished_job: dict[str, Any],
                                                                    tmp_path: Path) -> None:
    from trainyard.datasets import load_builtin

    raw = load_builtin("digits")["x_test"][:64]  # pixel counts 0..16, as scikit-learn ships them
    want = _trained_predictions(api, finished_job, raw, tmp_path)
    served = _served_predictions(api, finished_job, raw, tmp_path)
    for fmt, (predicted, card) in served.items():
        assert predicted.shape == want.shape == (64, 10), fmt
        np.testing.assert_allclose(predicted, want, rtol=1e-5, atol=1e-5, err_msg=fmt)
        assert card["job"]["id"] == finished_job["id"] and card["best"] == finished_job["best"], fmt
        assert card["normalization"]["inputs"] == finished_job["model"]["normalization"]["inputs"], fmt
    # The raw pixels are far from standardised: the trained model fed them directly answers otherwise.
    import keras

    unnormalised = keras.models.load_model(tmp_path / "best.keras").predict(raw, verbose=0)
    assert np.abs(served["onnx"][0] - unnormalised).max() > 1e-2


def test_every_export_answers_a_regression_in_raw_target_units(api: Api, regression_job: dict[str, Any],
                                                               tmp_path: Path) -> None:
    raw = _regression_arrays()["x_test"]
    want = _trained_predictions(api, regression_job, raw, tmp_path)
    assert regression_job["model"]["normalization"]["targets"]["method"] == "standardize"
    for fmt, (predicted, card) in _served_predictions(api, regression_job, raw, tmp_path).items():
        assert predicted.shape == want.shape == (40, 1), fmt
        np.testing.assert_allclose(predicted, want, rtol=1e-5, atol=1e-5, err_msg=fmt)
        assert card["serving"] == {"input": "features", "input_shape": [None, 4],
                                   "inputs_normalized_in_graph": True, "targets_denormalized_in_graph": True}
        assert card["dataset"]["sha256"] == regression_job["dataset"]["sha256"], fmt
    # In target units (around 400), not standardised ones.
    assert abs(float(np.mean(want)) - float(np.mean(_regression_arrays()["y_test"]))) < 200


def test_the_card_says_what_the_model_is(api: Api, regression_job: dict[str, Any], tmp_path: Path,
                                         other_auth: dict[str, str]) -> None:
    job_id = regression_job["id"]
    job = api("GET", f"/v1/jobs/{job_id}", 200).get_json()
    assert job["links"]["card"] == f"/v1/jobs/{job_id}/card"
    card = api("GET", f"/v1/jobs/{job_id}/card", 200).get_json()
    dataset = regression_job["dataset"]
    assert card["card_version"] == 1
    assert card["job"]["id"] == job_id and card["job"]["finished_at"] == job["finished_at"]
    assert card["spec"] == job["spec"]
    assert card["dataset"] == {"id": dataset["id"], "builtin": False, "name": "linear.npz", "format": "npz",
                               "sha256": dataset["sha256"], "size": dataset["size"], "task": "regression",
                               "n_classes": None, "input_shape": [4], "target_shape": [],
                               "samples": {"train": 160, "val": 40, "test": 40}}
    assert card["normalization"] == job["model"]["normalization"]
    assert card["model"] == {"params": job["model"]["params"], "trainable_params": job["model"]["trainable_params"]}
    assert card["best"] == job["best"] and card["test_metrics"] == job["test_metrics"]
    assert set(card["test_metrics"]) == {"loss", "mae"}
    assert card["environment"] == job["environment"] and card["environment"]["keras"]
    assert card["timings"] == job["timings"]
    assert {f"export_{fmt.replace('-', '_')}_seconds" for fmt in FORMATS} <= set(card["timings"])
    findings = api("GET", f"/v1/jobs/{job_id}/diagnostics", 200).get_json()["findings"]
    assert [f["id"] for f in card["findings"]] == [f["id"] for f in findings]

    # Every export that was made, with what a client needs to fetch and check it.
    assert [e["format"] for e in card["exports"]] == list(FORMATS)
    for export in card["exports"]:
        resp = api("GET", export["links"]["download"].split("?")[0], 200, query={"format": export["format"]})
        assert resp.headers["ETag"] == f'"{export["sha256"]}"'
        assert int(resp.headers["Content-Length"]) == export["size"] and export["epoch"] == job["best"]["epoch"]
        assert export["seconds"] == card["timings"][f"export_{export['format'].replace('-', '_')}_seconds"]
        # The archive's copy is the card when the export was made: the same but for what came after it.
        inside = json.loads(tarfile.open(fileobj=io.BytesIO(resp.get_data())).extractfile("card.json").read())
        assert set(inside) == set(card) - {"exports", "links"}
        for key in set(inside) - {"job", "timings"}:
            assert inside[key] == card[key], key
        assert inside["job"]["id"] == job_id and inside["job"]["finished_at"] is None
        assert set(inside["timings"]) < set(card["timings"])
        assert "export_savedmodel_seconds" not in inside["timings"]

    api("GET", f"/v1/jobs/{job_id}/card", 404, headers=other_auth)
    api("GET", "/v1/jobs/job_" + "0" * 32 + "/card", 404)


def test_download_formats_and_when_exports_exist(api: Api, finished_job: dict[str, Any], worker: Any) -> None:
    job_id = finished_job["id"]
    resp = api("GET", f"/v1/jobs/{job_id}/checkpoints/best", 422, query={"format": "pmml"}, request_valid=False)
    assert resp.get_json()["errors"] == [
        {"field": "query.format", "message": "Must be one of: keras, savedmodel, keras-serving, onnx."}]
    assert api("GET", f"/v1/jobs/{job_id}/checkpoints/best", 200, query={"format": "keras"}).get_data()[:2] == b"PK"

    # A job that has not ended has no export and no card yet (409); once cancelled it never gets an export
    # (404), and its card describes the checkpoint it kept, with no exports.
    long = api("POST", "/v1/jobs", 201, json_body=tiny_spec(training={"epochs": 2000, "batch_size": 16})).get_json()
    queued = api("POST", "/v1/jobs", 201, json_body=tiny_spec()).get_json()  # behind it: the worker runs one
    for fmt in FORMATS:
        resp = api("GET", f"/v1/jobs/{long['id']}/checkpoints/best", 409, query={"format": fmt})
        assert "when the job succeeds" in resp.get_json()["detail"]
    assert "has ended" in api("GET", f"/v1/jobs/{long['id']}/card", 409).get_json()["detail"]
    api("POST", f"/v1/jobs/{queued['id']}/cancel", 202)
    wait_until(lambda: api("GET", f"/v1/jobs/{long['id']}", 200).get_json()["best"], 120, 0.3,
               "the long job's first checkpoint")
    api("POST", f"/v1/jobs/{long['id']}/cancel", 202)
    wait_until(lambda: api("GET", f"/v1/jobs/{long['id']}", 200).get_json()["status"] in FINAL, 120, 0.3,
               "the cancelled job to end")
    for fmt in FORMATS:
        api("GET", f"/v1/jobs/{long['id']}/checkpoints/best", 404, query={"format": fmt})
    card = api("GET", f"/v1/jobs/{long['id']}/card", 200).get_json()
    assert card["exports"] == [] and card["best"]["epoch"] >= 1
    # Cancelled while queued: no checkpoint, so no model to describe.
    wait_until(lambda: api("GET", f"/v1/jobs/{queued['id']}", 200).get_json()["status"] in FINAL, 60, 0.3,
               "the queued job to be cancelled")
    assert "without a checkpoint" in api("GET", f"/v1/jobs/{queued['id']}/card", 404).get_json()["detail"]
    api("GET", f"/v1/jobs/{long['id']}/tensorboard", 200)
    for done in (long, queued):
        api("DELETE", f"/v1/jobs/{done['id']}", 204)


def test_another_tenant_sees_no_export(api: Api, finished_job: dict[str, Any], other_auth: dict[str, str]) -> None:
    for fmt in ("keras", *FORMATS):
        api("GET", f"/v1/jobs/{finished_job['id']}/checkpoints/best", 404, query={"format": fmt}, headers=other_auth)
    api("GET", f"/v1/jobs/{finished_job['id']}/card", 404, headers=other_auth)


def test_readme_exports_run_as_written(api_url: str, finished_job: dict[str, Any], token: str,
                                       tmp_path: Path) -> None:
    """The README's raw-input predictions with each export, and the card, run against the digits job."""
    import re
    import subprocess
    import sys

    from tests.conftest import ROOT, subprocess_env

    readme = (ROOT / "README.md").read_text()
    start = readme.index("\n## Exports\n")
    section = readme[start:readme.find("\n## ", start + 1)]
    [script] = [b for b in re.findall(r"```sh\n(.*?)```", section, re.S) if "format=$f" in b]
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parent.parent)
    env = subprocess_env({"PYTHONPATH": str(ROOT), "API": api_url, "JOB": finished_job["id"], "TOKEN": token,
                          "AUTH": f"Authorization: Bearer {token}", "TRAINYARD_URL": api_url,
                          "TRAINYARD_TOKEN": token})
    run = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    cards, decoder, at = [], json.JSONDecoder(), 0
    while (at := run.stdout.find("{", at)) != -1:  # the curl and the CLI card, however each lays it out
        card, at = decoder.raw_decode(run.stdout, at)
        cards.append(card)
    assert len(cards) == 2 and all(c["job"]["id"] == finished_job["id"] for c in cards)
    scored = re.findall(r"^(\S+): accuracy on 359 raw held-out digits: ([0-9.]+)$", run.stdout, re.M)
    # On raw pixels each export scores what the job measured on the normalised test split.
    reported = f"{finished_job['test_metrics']['accuracy']:.3f}"
    assert scored == [(fmt, reported) for fmt in FORMATS], run.stdout[-3000:]
    assert (tmp_path / "var" / "model.onnx.tar.gz").stat().st_size > 0


def test_deleting_a_job_deletes_its_export(api: Api, app: Any, finished_job: dict[str, Any]) -> None:
    # Last in this module: it deletes the job the tests above share.
    from sqlalchemy import select

    from trainyard.db.models import Artifact

    def stored() -> list[str]:
        with app.extensions["trainyard"].db.session() as s:
            return list(s.execute(select(Artifact.key).where(Artifact.key.like(f"jobs/{finished_job['id']}/%"))).scalars())

    assert {key.rsplit(".", 3)[-3] for key in stored() if key.endswith(".tar.gz")} == set(FORMATS)
    api("DELETE", f"/v1/jobs/{finished_job['id']}", 204)
    assert stored() == []
