"""Sweeps through the Flask app on real Postgres, every request and response checked against openapi.yaml.
No worker is needed: trials stay queued until cancelled here (a session worker may start them; the
assertions allow for that)."""
from __future__ import annotations

from typing import Any

from trainyard.sweeps import controller
from tests.conftest import tiny_spec
from tests.service.test_openapi import Api, api, load_document, openapi  # noqa: F401 (fixtures)


def example_body() -> dict[str, Any]:
    content = load_document()["paths"]["/v1/sweeps"]["post"]["requestBody"]["content"]["application/json"]
    return content["examples"]["learningRateAndUnits"]["value"]


def test_submit_read_list_and_cancel_a_sweep(api: Api, other_auth: dict[str, str], app: Any) -> None:
    body = {**example_body(), "seed": 11}
    # Long trials: should a session worker start one, it cannot finish (and free a slot) during this test.
    body["base"] = {**body["base"], "training": {"epochs": 5000, "batch_size": 16, "seed": 0}}
    resp = api("POST", "/v1/sweeps", 201, json_body=body)
    sweep = resp.get_json()
    assert resp.headers["Location"] == f"/v1/sweeps/{sweep['id']}"
    assert sweep["status"] == "running" and sweep["seed"] == 11
    assert sweep["objective"] == {"metric": "val_loss", "mode": "min"}
    assert sweep["progress"]["submitted"] == 2 and sweep["progress"]["max_trials"] == 8
    assert [t["trial"] for t in sweep["trials"]] == [0, 1] and all(t["rank"] is None for t in sweep["trials"])
    assert sweep["best_job_id"] is None and "best_checkpoint" not in sweep["links"]
    assert [t["params"]["model.layers[0].units"] for t in sweep["trials"]] == [32, 64]

    # Trials are ordinary jobs: linked to the sweep, named after it, checkpointing the objective.
    job = api("GET", sweep["trials"][1]["links"]["job"], 200).get_json()
    assert job["sweep"] == {"id": sweep["id"], "trial": 1}
    assert job["name"] == "iris-mlp (trial 1)"
    assert job["spec"]["model"]["layers"][0]["units"] == 64
    assert job["spec"]["optimizer"]["learning_rate"] == sweep["trials"][1]["params"]["optimizer.learning_rate"]
    assert job["spec"]["callbacks"]["checkpoint"] == {"monitor": "val_loss", "mode": "min"}

    # The same seed draws the same values; an Idempotency-Key replays the sweep itself.
    again = api("POST", "/v1/sweeps", 201, json_body=body, headers={"Idempotency-Key": "sweep-once"}).get_json()
    assert [t["params"] for t in again["trials"]] == [t["params"] for t in sweep["trials"]]
    replay = api("POST", "/v1/sweeps", 201, json_body=body, headers={"Idempotency-Key": "sweep-once"})
    assert replay.headers["Idempotent-Replayed"] == "true" and replay.get_json()["id"] == again["id"]
    assert len(replay.get_json()["trials"]) == 2  # no second round of trials
    api("POST", "/v1/sweeps", 409, json_body={**body, "seed": 12}, headers={"Idempotency-Key": "sweep-once"})

    listed = api("GET", "/v1/sweeps", 200, query={"limit": 1}).get_json()
    assert listed["sweeps"][0]["id"] == again["id"] and listed["next_cursor"]
    page2 = api("GET", "/v1/sweeps", 200, query={"limit": 1, "cursor": listed["next_cursor"]}).get_json()
    assert sweep["id"] in {s["id"] for s in page2["sweeps"]}
    assert {s["id"] for s in api("GET", "/v1/sweeps", 200, query={"status": "running"}).get_json()["sweeps"]} >= {
        sweep["id"], again["id"]}
    api("GET", "/v1/sweeps", 422, query={"status": "sleeping"}, request_valid=False)

    # Another tenant sees nothing.
    api("GET", f"/v1/sweeps/{sweep['id']}", 404, headers=other_auth)
    api("POST", f"/v1/sweeps/{sweep['id']}/cancel", 404, headers=other_auth)
    assert sweep["id"] not in {s["id"] for s in api("GET", "/v1/sweeps", 200, headers=other_auth).get_json()["sweeps"]}
    api("GET", "/v1/sweeps/swp_" + "0" * 32, 404)

    for target in (sweep, again):
        cancelled = api("POST", f"/v1/sweeps/{target['id']}/cancel", 202).get_json()
        assert cancelled["status"] == "cancelled" and cancelled["finished_at"]
        for trial in cancelled["trials"]:  # queued (or, with a worker around, stopping at its next batch)
            job = api("GET", trial["links"]["job"], 200).get_json()
            assert job["cancel_requested"] and job["status"] in ("cancelled", "running")
        api("POST", f"/v1/sweeps/{target['id']}/cancel", 409)
    # A cancelled sweep submits nothing more, whoever tops it up.
    svc = app.extensions["trainyard"]
    assert controller.top_up(svc.db, lambda _id: None, sweep["id"], svc.settings.spec_limits) == []
    assert api("GET", f"/v1/sweeps/{sweep['id']}", 200).get_json()["progress"]["submitted"] == 2


def test_invalid_sweeps_answer_422_with_field_paths(api: Api) -> None:
    body = example_body()
    bad_base = tiny_spec()
    bad_base["model"]["layers"][0]["units"] = 0
    cases: list[tuple[dict[str, Any], str, bool]] = [
        ({**body, "base": bad_base}, "base.model.layers[0].units", False),
        ({**body, "search": {"optimizer.learning_rate": {"type": "log_uniform", "low": -1, "high": 0.1}}},
         "search.optimizer.learning_rate.low", True),
        ({**body, "search": {"model.layers[0].units": {"type": "grid", "values": [32, 0]}}, "max_trials": 2},
         "search.model.layers[0].units.values[1]", True),
        ({**body, "search": {"model.layers[7].units": {"type": "grid", "values": [32]}}, "max_trials": 1},
         "search.model.layers[7].units", True),
        ({**body, "objective": {"metric": "val_auc"}}, "objective.metric", True),
        ({**body, "max_trials": 7}, "max_trials", True),
        ({**body, "parallelism": 0}, "parallelism", False),
    ]
    for raw, field, request_valid in cases:
        resp = api("POST", "/v1/sweeps", 422, json_body=raw, request_valid=request_valid)
        assert field in {e["field"] for e in resp.get_json()["errors"]}, (field, resp.get_json())
    api("POST", "/v1/sweeps", 400, data=b"{nope", content_type="application/json", request_valid=False)
    api("POST", "/v1/sweeps", 422, json_body=[1], request_valid=False)


def test_operators_cap_trials_per_sweep(settings: Any, make_token: Any) -> None:
    from service import create_app
    from trainyard.settings import Settings

    limited = Settings.from_env({
        "TRAINYARD_DATABASE_URL": settings.database_url, "TRAINYARD_BROKER_URL": settings.broker_url,
        "TRAINYARD_VAR_DIR": str(settings.var_dir), "TRAINYARD_MAX_SWEEP_TRIALS": "4"})
    client = create_app(limited).test_client()
    headers = {"Authorization": f"Bearer {make_token('limited-sweeps')}"}
    resp = client.post("/v1/sweeps", json=example_body(), headers=headers)  # 8 trials
    assert resp.status_code == 422
    assert {e["field"]: e["message"] for e in resp.get_json()["errors"]}["max_trials"] == \
        "Must be a whole number from 1 to 4."
