"""The data checks end to end (issue 17 item 5): uploaded data sets, real jobs on the real worker, the
findings read from GET /v1/jobs/{id}/diagnostics and every request and response validated against
openapi.yaml. Leakage and class imbalance are warnings (the jobs succeed); ``training.class_weight:
"balanced"`` trains through the service and quiets the imbalance; a feature beyond float32's range stops
the job before training."""
from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest

from tests.conftest import wait_until
from tests.service.test_openapi import FINAL, Api, load_openapi

FEATURES = 8
LEAKED_VAL_ROWS = 12
# Training labels of the imbalanced upload: 270, 18 and 12 rows (the largest 22.5 times the smallest).
IMBALANCED_COUNTS = (270, 18, 12)


def _npz(**arrays: Any) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _labelled(rng: np.random.Generator, counts: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Rows of each class around their own centre (learnable), classes in the given counts, shuffled."""
    y = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    x = rng.normal(size=(len(y), FEATURES)).astype(np.float32) + y[:, None].astype(np.float32)
    order = rng.permutation(len(y))
    return x[order], y[order]


def _spec(dataset: str, **training: Any) -> dict[str, Any]:
    return {
        "dataset": {"id": dataset},
        "model": {"input_shape": [FEATURES], "layers": [{"type": "dense", "units": 16, "activation": "relu"},
                                                        {"type": "dense", "units": 3, "activation": "softmax"}]},
        "loss": "sparse_categorical_crossentropy",
        "metrics": ["accuracy"],
        "optimizer": {"type": "adam", "learning_rate": 0.01},
        "training": {"epochs": 3, "batch_size": 32, "seed": 0, **training},
    }


@pytest.fixture(scope="module")
def api(client: Any, auth: dict[str, str]) -> Api:
    return Api(client, load_openapi(), auth)


@pytest.fixture(scope="module")
def client(app: Any) -> Any:  # module-scoped: the jobs below are submitted once for all tests
    return app.test_client()


def _upload(client: Any, auth: dict[str, str], content: bytes) -> str:
    resp = client.post("/v1/datasets", headers=auth, content_type="multipart/form-data",
                       data={"file": (io.BytesIO(content), "data.npz")})
    assert resp.status_code == 201, resp.get_json()
    return resp.get_json()["id"]


@pytest.fixture(scope="module")
def jobs(api: Api, client: Any, auth: dict[str, str], worker: Any) -> dict[str, dict[str, Any]]:
    """Upload the data sets, submit every case at once (the worker runs them in turn), wait for all."""
    rng = np.random.default_rng(17)
    x, y = _labelled(rng, (80, 80, 80))
    x_new, y_new = _labelled(rng, (10, 10, 8))
    # 12 validation rows copied from the training split (labels and all), 28 new ones; a clean test split.
    x_val = np.concatenate([x[:LEAKED_VAL_ROWS], x_new])
    y_val = np.concatenate([y[:LEAKED_VAL_ROWS], y_new])
    x_test, y_test = _labelled(rng, (7, 7, 7))
    leaky = _upload(client, auth, _npz(x_train=x, y_train=y, x_val=x_val, y_val=y_val, x_test=x_test, y_test=y_test))
    xi, yi = _labelled(rng, IMBALANCED_COUNTS)
    xi_val, yi_val = _labelled(rng, (27, 3, 2))
    imbalanced = _upload(client, auth, _npz(x_train=xi, y_train=yi, x_val=xi_val, y_val=yi_val))
    # Finite in float64 (so the upload takes it), infinite once the model reads it as float32.
    huge = x.astype(np.float64)
    huge[100, 5] = 1e39
    beyond_float32 = _upload(client, auth, _npz(x_train=huge, y_train=y))
    specs = {
        "leaky": _spec(leaky),
        "imbalanced": _spec(imbalanced),
        "imbalanced_balanced": _spec(imbalanced, class_weight="balanced"),
        "beyond_float32": {**_spec(beyond_float32), "dataset": {"id": beyond_float32, "validation_split": 0.2}},
    }
    ids = {name: api("POST", "/v1/jobs", 201, json_body=spec).get_json()["id"] for name, spec in specs.items()}

    def all_done() -> bool:
        return all(api("GET", f"/v1/jobs/{i}", 200).get_json()["status"] in FINAL for i in ids.values())

    wait_until(all_done, 300, 0.5, "the data-check jobs to end")
    return {name: {"job": api("GET", f"/v1/jobs/{job_id}", 200).get_json(),
                   "findings": api("GET", f"/v1/jobs/{job_id}/diagnostics", 200).get_json()["findings"]}
            for name, job_id in ids.items()}


def _by_code(case: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {f["code"]: f for f in case["findings"]}


def test_rows_shared_between_training_and_validation_raise_data_leakage(jobs: dict[str, Any]) -> None:
    case = jobs["leaky"]
    assert case["job"]["status"] == "succeeded", case["job"]["error"]  # a warning never stops a job
    leak = _by_code(case)["data_leakage"]
    assert leak["id"] == "data_leakage:-" and leak["severity"] == "warning" and leak["epoch"] is None
    assert leak["evidence"]["val"] == {"rows": 40, "shared_with_train": LEAKED_VAL_ROWS,
                                       "fraction": pytest.approx(LEAKED_VAL_ROWS / 40)}
    assert "test" not in leak["evidence"]  # the test split shares nothing
    assert leak["suggested_change"] is None and "12 of 40 validation rows" in leak["message"]
    # Balanced classes, varied features: nothing else about the data is flagged.
    assert not {"class_imbalance", "constant_feature", "non_finite_feature"} & set(_by_code(case))
    assert case["job"]["findings"]["by_severity"]["warning"] >= 1


def test_severe_imbalance_raises_class_imbalance_with_the_class_weight_suggestion(jobs: dict[str, Any]) -> None:
    case = jobs["imbalanced"]
    assert case["job"]["status"] == "succeeded", case["job"]["error"]
    found = _by_code(case)
    imbalance = found["class_imbalance"]
    assert imbalance["severity"] == "warning" and imbalance["id"] == "class_imbalance:-"
    assert imbalance["evidence"]["class_counts"] == {str(c): n for c, n in enumerate(IMBALANCED_COUNTS)}
    assert imbalance["evidence"]["ratio"] == pytest.approx(270 / 12)
    assert imbalance["suggested_change"] == {"training": {"class_weight": "balanced"}}
    assert imbalance["suggested_change_basis"] == "class_counts"
    assert "data_leakage" not in found  # its validation split is its own rows


def test_class_weight_balanced_trains_through_the_service_and_answers_the_finding(jobs: dict[str, Any]) -> None:
    case = jobs["imbalanced_balanced"]
    assert case["job"]["status"] == "succeeded", case["job"]["error"]
    assert case["job"]["spec"]["training"]["class_weight"] == "balanced"
    assert "class_imbalance" not in _by_code(case)
    # Weighted rows, another loss: the same seed and data without weights trained differently.
    assert case["job"]["best"]["value"] != pytest.approx(jobs["imbalanced"]["job"]["best"]["value"], rel=1e-4)


def test_a_feature_beyond_float32_stops_the_job_before_training(jobs: dict[str, Any]) -> None:
    job = jobs["beyond_float32"]["job"]
    assert job["status"] == "failed" and job["stop_reason"] == "diagnosis", (job["status"], job["error"])
    assert job["error"]["code"] == "non_finite_feature" and "before training" in job["error"]["message"]
    finding = _by_code(jobs["beyond_float32"])["non_finite_feature"]
    assert finding["severity"] == "error" and finding["evidence"]["train"]["features"] == [5]
    assert job["progress"]["epoch"] == 0 and job["best"] is None and "preflight_seconds" not in job["timings"]
