"""Fork with the fix, through the API and the real worker (issue 17, item 4): the tiny-learning-rate job
stops by diagnosis, a fork that applies its finding converges, and the finding is marked resolved by it.
Every request and answer is checked against openapi.yaml."""
from __future__ import annotations

from typing import Any

import pytest

from tests.service.module_api import module_api, module_client  # noqa: F401 (module-scoped client and api)
from tests.service.test_openapi import Api
from trainyard.store import initial_weights_key

DIGITS_SGD_1E_10 = {
    "name": "digits-tiny-lr",
    "dataset": {"id": "builtin:digits", "validation_split": 0.2, "normalize": "standardize"},
    "model": {"input_shape": [64], "layers": [{"type": "dense", "units": 32, "activation": "relu"},
                                             {"type": "dense", "units": 10, "activation": "softmax"}]},
    "loss": "sparse_categorical_crossentropy", "metrics": ["accuracy"],
    "optimizer": {"type": "sgd", "learning_rate": 1e-10},
    "training": {"epochs": 20, "batch_size": 32, "seed": 0},
}


def _finding(api: Api, job_id: str, finding_id: str) -> dict[str, Any]:
    findings = api("GET", f"/v1/jobs/{job_id}/diagnostics", 200).get_json()["findings"]
    return next(f for f in findings if f["id"] == finding_id)


@pytest.fixture(scope="module")
def parent(api: Api, worker: Any) -> dict[str, Any]:
    job = api("POST", "/v1/jobs", 201, json_body=DIGITS_SGD_1E_10).get_json()
    return api.ended_job(job["id"])


@pytest.fixture(scope="module")
def child(api: Api, parent: dict[str, Any]) -> dict[str, Any]:
    created = api("POST", f"/v1/jobs/{parent['id']}/fork", 201, json_body={"apply_findings": ["lr_too_small:-"]})
    return {"created": created.get_json(), "location": created.headers["Location"],
            "ended": api.ended_job(created.get_json()["id"])}


def test_the_tiny_learning_rate_job_stops_by_diagnosis(api: Api, parent: dict[str, Any]) -> None:
    assert (parent["status"], parent["stop_reason"], parent["error"]["code"]) == ("failed", "diagnosis",
                                                                                  "lr_too_small")
    finding = _finding(api, parent["id"], "lr_too_small:-")
    assert finding["resolved_by"] is None or finding["resolved_by"]["job_id"] != parent["id"]
    assert 1e-4 <= finding["suggested_change"]["optimizer"]["learning_rate"] <= 1


def test_a_fork_applying_the_finding_converges_and_resolves_it(api: Api, parent: dict[str, Any],
                                                               child: dict[str, Any]) -> None:
    created, ended = child["created"], child["ended"]
    suggested = _finding(api, parent["id"], "lr_too_small:-")["suggested_change"]
    assert child["location"] == f"/v1/jobs/{created['id']}"
    assert created["parent"] == {"id": parent["id"], "from": "scratch", "epoch": None, "patch": suggested,
                                 "applied_findings": ["lr_too_small:-"]}
    # The parent's spec with the suggested rate, nothing else changed.
    assert created["spec"]["optimizer"]["learning_rate"] == suggested["optimizer"]["learning_rate"]
    assert {k: v for k, v in created["spec"].items() if k != "optimizer"} == \
        {k: v for k, v in parent["spec"].items() if k != "optimizer"}

    assert (ended["status"], ended["error"]) == ("succeeded", None), ended
    assert ended["test_metrics"]["accuracy"] >= 0.8, ended["test_metrics"]  # ten classes: chance is 0.1
    assert api("GET", f"/v1/jobs/{parent['id']}", 200).get_json()["children"] == [created["id"]]
    assert _finding(api, parent["id"], "lr_too_small:-")["resolved_by"] == {"job_id": created["id"],
                                                                            "resolved": True}


def test_a_fork_from_the_best_checkpoint_starts_from_its_weights(api: Api, app: Any, parent: dict[str, Any],
                                                                 child: dict[str, Any]) -> None:
    body = {"apply_findings": ["lr_too_small:-"], "patch": {"training": {"epochs": 2}}, "from": "best"}
    created = api("POST", f"/v1/jobs/{parent['id']}/fork", 201, json_body=body).get_json()
    assert created["parent"]["from"] == "best" and created["parent"]["epoch"] == parent["best"]["epoch"]
    ended = api.ended_job(created["id"])
    assert ended["status"] == "succeeded" and ended["progress"]["epoch"] == 2, ended
    assert api("GET", f"/v1/jobs/{parent['id']}", 200).get_json()["children"] == [child["created"]["id"],
                                                                                   created["id"]]
    # A later fork that resolved it too: the finding names the later one, still resolved.
    assert _finding(api, parent["id"], "lr_too_small:-")["resolved_by"]["resolved"] is True
    # Its copy of the weights is its own: deleting the fork deletes it, the parent keeps its checkpoint.
    store = app.extensions["trainyard"].store
    copy = initial_weights_key(created["id"], parent["best"]["epoch"], ".keras")
    assert store.stat(copy) is not None
    api("DELETE", f"/v1/jobs/{created['id']}", 204)
    assert store.stat(copy) is None
    assert api("GET", parent["links"]["best_checkpoint"], 200).data


def test_fork_errors_name_their_field(api: Api, parent: dict[str, Any]) -> None:
    fork = f"/v1/jobs/{parent['id']}/fork"

    def fields(body: Any, valid: bool = True) -> set[str]:
        return {e["field"] for e in api("POST", fork, 422, json_body=body, request_valid=valid).get_json()["errors"]}

    assert fields({"apply_findings": ["no_such:-"]}) == {"apply_findings[0]"}
    assert fields({"from": "worst"}, valid=False) == {"from"}
    bad_rate = api("POST", fork, 422, json_body={"patch": {"optimizer": {"learning_rate": 100}}}).get_json()
    assert [e["field"] for e in bad_rate["errors"]] == ["patch.optimizer.learning_rate"]
    layers = [dict(layer, units=64) if i == 0 else layer for i, layer in enumerate(parent["spec"]["model"]["layers"])]
    wider = api("POST", fork, 422, json_body={"patch": {"model": {"layers": layers}}, "from": "last"}).get_json()
    assert [e["field"] for e in wider["errors"]] == ["patch.model"]
    missing = api("POST", fork, 409, json_body={"from": {"epoch": 19}}).get_json()
    assert "no checkpoint of epoch 19" in missing["detail"]


def test_another_tenants_job_cannot_be_forked(api: Api, parent: dict[str, Any], other_auth: dict[str, str]) -> None:
    api("POST", f"/v1/jobs/{parent['id']}/fork", 404, json_body={}, headers=other_auth)
    api("POST", "/v1/jobs/job_" + "0" * 32 + "/fork", 404, json_body={})
