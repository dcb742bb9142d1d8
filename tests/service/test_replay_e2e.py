"""Replay through the API and the real worker (issue 18, item 5): a seeded job trained again on the same
machine and versions gives identical per-epoch metrics, its `reproduction` says so, and the comparison of
the two agrees. Every request and answer is checked against openapi.yaml."""
from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import tiny_spec
from tests.service.module_api import module_api, module_client  # noqa: F401 (module-scoped client and api)
from tests.service.test_openapi import Api

# Dropout and a shuffled validation split: randomness a seed must pin down for the runs to agree.
SPEC = tiny_spec(name="replayed", dataset={"id": "builtin:iris", "validation_split": 0.2, "normalize": "standardize"},
                 model={"input_shape": [4], "layers": [{"type": "dense", "units": 16, "activation": "relu"},
                                                      {"type": "dropout", "rate": 0.2},
                                                      {"type": "dense", "units": 3, "activation": "softmax"}]},
                 training={"epochs": 4, "batch_size": 16, "seed": 5})


@pytest.fixture(scope="module")
def runs(api: Api, worker: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    original = api.ended_job(api("POST", "/v1/jobs", 201, json_body=SPEC).get_json()["id"])
    replay = api("POST", f"/v1/jobs/{original['id']}/replay", 201).get_json()
    assert replay["replay_of"] == original["id"] and replay["reproduction"] is None
    return original, api.ended_job(replay["id"])


def _metrics(api: Api, job_id: str) -> list[dict[str, Any]]:
    return api("GET", f"/v1/jobs/{job_id}/metrics", 200).get_json()["epochs"]


def test_a_seeded_replay_reproduces_every_epoch_exactly(api: Api, runs: tuple[dict[str, Any], dict[str, Any]]) -> None:
    original, replay = runs
    assert (original["status"], replay["status"]) == ("succeeded", "succeeded"), (original, replay)
    assert replay["spec"] == original["spec"] and replay["replay_of"] == original["id"]
    first, again = _metrics(api, original["id"]), _metrics(api, replay["id"])
    assert len(first) == len(again) == 4
    for a, b in zip(first, again):
        assert {k: v for k, v in a.items() if k != "seconds"} == {k: v for k, v in b.items() if k != "seconds"}
    reproduction = replay["reproduction"]
    assert reproduction["identical"] is True and reproduction["first_divergent_epoch"] is None, reproduction
    assert set(reproduction["max_abs_diff"]) >= {"loss", "val_loss", "accuracy", "val_accuracy", "learning_rate"}
    assert all(value == 0.0 for value in reproduction["max_abs_diff"].values()), reproduction
    # One worker process trained both: nothing in the environment differs.
    assert reproduction["environment_diff"] == {}
    assert replay["best"] == original["best"] and replay["test_metrics"] == original["test_metrics"]


def test_the_comparison_of_the_two_agrees(api: Api, runs: tuple[dict[str, Any], dict[str, Any]]) -> None:
    original, replay = runs
    body = api("GET", "/v1/jobs/compare", 200, query={"ids": f"{original['id']},{replay['id']}"}).get_json()
    assert body["spec_diff"] == {} and body["environment_diff"] == {}
    assert body["pairs"] == [{"ids": [original["id"], replay["id"]], "seed": 5, "identical": True,
                              "first_divergent_epoch": None, "max_abs_diff": replay["reproduction"]["max_abs_diff"]}]
    assert [row["epoch"] for row in body["epochs"]] == [1, 2, 3, 4]
    assert all(a == b for row in body["epochs"] for a, b in row["values"].values())
    assert [j["replay_of"] for j in body["jobs"]] == [None, original["id"]]
