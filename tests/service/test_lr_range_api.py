"""The learning-rate range test end to end: `optimizer.learning_rate: "auto"` and `diagnostics.lr_range_test`
submitted to the API, trained by the real worker, and read back (job, diagnostics, timings) validated
against openapi.yaml."""
from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import tiny_spec, wait_until
from tests.service.module_api import module_api, module_client  # noqa: F401 (module-scoped client and api)
from tests.service.test_openapi import FINAL, Api


def _digits(optimizer: dict[str, Any], **diagnostics: Any) -> dict[str, Any]:
    # The README's walk-through job, with the rate left to the range test.
    return {
        "name": "digits-auto",
        "dataset": {"id": "builtin:digits", "validation_split": 0.2, "normalize": "standardize"},
        "model": {"input_shape": [64], "layers": [{"type": "dense", "units": 64, "activation": "relu"},
                                                 {"type": "dropout", "rate": 0.1},
                                                 {"type": "dense", "units": 10, "activation": "softmax"}]},
        "loss": "sparse_categorical_crossentropy",
        "metrics": ["accuracy"],
        "optimizer": optimizer,
        "training": {"epochs": 20, "batch_size": 32, "seed": 0},
        "diagnostics": diagnostics,
    }


@pytest.fixture(scope="module")
def jobs(api: Api, worker: Any) -> dict[str, dict[str, Any]]:
    specs = {
        "auto": _digits({"type": "adam", "learning_rate": "auto"}),
        "test_only": {**tiny_spec(), "diagnostics": {"lr_range_test": True}},
    }
    ids = {name: api("POST", "/v1/jobs", 201, json_body=spec).get_json()["id"] for name, spec in specs.items()}

    def ended() -> dict[str, dict[str, Any]] | None:
        bodies = {name: api("GET", f"/v1/jobs/{job_id}", 200).get_json() for name, job_id in ids.items()}
        return bodies if all(b["status"] in FINAL for b in bodies.values()) else None

    return wait_until(ended, 600, 1.0, "the range-test jobs to finish")


def test_auto_trains_digits_at_the_chosen_rate(api: Api, jobs: dict[str, dict[str, Any]]) -> None:
    job = jobs["auto"]
    assert job["status"] == "succeeded", job
    assert job["spec"]["optimizer"]["learning_rate"] == "auto"  # the normalised spec keeps it
    chosen = job["optimizer"]["learning_rate_chosen"]
    assert 1e-10 <= chosen <= 10
    assert job["test_metrics"]["accuracy"] >= 0.95, (chosen, job["test_metrics"])
    metrics = api("GET", f"/v1/jobs/{job['id']}/metrics", 200).get_json()["epochs"]
    assert max(row["val_accuracy"] for row in metrics) >= 0.95
    assert metrics[0]["learning_rate"] == pytest.approx(chosen, rel=1e-6)  # it trains at that rate

    sweep = api("GET", f"/v1/jobs/{job['id']}/diagnostics", 200).get_json()["lr_range_test"]
    assert sweep["suggested_learning_rate"] == sweep["learning_rate_chosen"] == chosen
    assert sweep["rule"] == "valley" and 0 < sweep["steps"] <= sweep["steps_planned"] <= 100
    curve = sweep["curve"]
    assert len(curve) == sweep["steps"]
    rates = [point["learning_rate"] for point in curve]
    assert rates == sorted(rates) and rates[0] == pytest.approx(1e-7)
    assert min(point["loss"] for point in curve) < curve[0]["loss"]
    # The cost is a phase of its own, next to the others.
    assert job["timings"]["lr_range_test_seconds"] > 0 and job["timings"]["fit_seconds"] > 0


def test_the_range_test_alone_reports_a_curve_and_keeps_the_rate(api: Api, jobs: dict[str, dict[str, Any]]) -> None:
    job = jobs["test_only"]
    assert job["status"] == "succeeded", job
    assert job["optimizer"] == {"learning_rate_chosen": None}
    sweep = api("GET", f"/v1/jobs/{job['id']}/diagnostics", 200).get_json()["lr_range_test"]
    assert sweep["curve"] and sweep["suggested_learning_rate"] > 0 and "learning_rate_chosen" not in sweep
    metrics = api("GET", f"/v1/jobs/{job['id']}/metrics", 200).get_json()["epochs"]
    assert [row["learning_rate"] for row in metrics] == [pytest.approx(0.01)] * len(metrics)  # tiny_spec's rate
    assert "lr_range_test_seconds" in job["timings"]


def test_a_job_without_it_has_no_curve(api: Api, worker: Any) -> None:
    job = api("POST", "/v1/jobs", 201, json_body=tiny_spec()).get_json()
    done = wait_until(lambda: (b := api("GET", f"/v1/jobs/{job['id']}", 200).get_json())["status"] in FINAL and b,
                      300, 0.5, "the job to finish")
    assert done["optimizer"] == {"learning_rate_chosen": None} and "lr_range_test_seconds" not in done["timings"]
    assert api("GET", f"/v1/jobs/{job['id']}/diagnostics", 200).get_json()["lr_range_test"] is None


def test_auto_with_piecewise_constant_is_a_422_at_the_field(api: Api) -> None:
    spec = {**tiny_spec(optimizer={"type": "sgd", "learning_rate": "auto"}),
            "schedule": {"type": "piecewise_constant", "boundaries": [2], "values": [0.1, 0.01]}}
    body = api("POST", "/v1/jobs", 422, json_body=spec).get_json()
    assert [e["field"] for e in body["errors"]] == ["optimizer.learning_rate"]
    body = api("POST", "/v1/jobs", 422, json_body=tiny_spec(optimizer={"type": "adam", "learning_rate": "fast"}),
               request_valid=False).get_json()
    assert [e["field"] for e in body["errors"]] == ["optimizer.learning_rate"]
