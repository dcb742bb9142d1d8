"""`GET /v1/jobs/compare` and `POST /v1/jobs/{id}/replay` through the API without a worker: jobs and their
metric rows are written as a worker writes them, and every answer is checked against openapi.yaml. The
comparison's cost does not grow with the number of jobs or epochs. (The replay's end-to-end test through
the real worker: tests/service/test_replay_e2e.py.)"""
from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import event, select

from tests.conftest import tiny_spec, wait_until
from tests.service.test_openapi import Api, load_openapi
from trainyard.db.models import EpochMetrics, Job
from trainyard.spec import validate_spec
from trainyard.submission import new_job

ENV = {"python": "3.12.1", "keras": "3.6.0", "tensorflow": "2.18.0", "numpy": "2.0.2",
       "trainyard": {"version": "0.1.0", "commit": None}, "platform": "Linux-x86_64",
       "device": {"kind": "cpu", "name": "Test CPU", "count": 2},
       "determinism": {"seed": 1, "op_determinism": True, "onednn": True},
       "worker": {"id": "w1", "hostname": "host"}}


@pytest.fixture(scope="module")
def tenants(app: Any) -> dict[str, tuple[dict[str, str], str]]:
    from service.auth import create_token

    out = {}
    with app.extensions["trainyard"].db.session() as s:
        for name in ("mine", "theirs"):
            issued = create_token(s, f"compare-{name}-{random.getrandbits(32)}")
            out[name] = ({"Authorization": f"Bearer {issued.token}"}, issued.tenant_id)
    return out


@pytest.fixture()
def api(client: Any, tenants: dict[str, tuple[dict[str, str], str]]) -> Api:
    return Api(client, load_openapi(), tenants["mine"][0])


def add_job(app: Any, tenant_id: str, epochs: dict[int, dict[str, float]], *, status: str = "succeeded",
            environment: dict[str, Any] | None = None, **spec_overrides: Any) -> str:
    """A job row and its metric rows, as a submission and a worker write them."""
    with app.extensions["trainyard"].db.session() as s:
        job = new_job(tenant_id, validate_spec(tiny_spec(**spec_overrides)))
        job.status, job.environment = status, environment
        if epochs:
            best = min(epochs, key=lambda e: epochs[e]["loss"])
            job.best_monitor, job.best_value, job.best_epoch = "loss", epochs[best]["loss"], best
            job.epoch = max(epochs)
        s.add(job)
        s.flush()
        s.add_all(EpochMetrics(job_id=job.id, epoch=e, values=v) for e, v in epochs.items())
        return job.id


def run(n: int, scale: float = 1.0) -> dict[int, dict[str, float]]:
    return {e: {"loss": scale / e, "accuracy": 1 - 1 / (e + 1), "learning_rate": 0.01, "seconds": random.random()}
            for e in range(1, n + 1)}


def fields(resp: Any) -> list[str]:
    return [e["field"] for e in resp.get_json()["errors"]]


# --- compare ---------------------------------------------------------------------------------------------


def test_compare_shows_spec_and_environment_diffs_curves_and_divergence(api: Api, app: Any, tenants: Any) -> None:
    tenant = tenants["mine"][1]
    a = add_job(app, tenant, run(3), environment=ENV)
    diverged = {**run(3), 3: {**run(3)[3], "loss": 0.3}}
    b = add_job(app, tenant, diverged, environment={**ENV, "keras": "3.7.0"},
                optimizer={"type": "adam", "learning_rate": 0.001})
    c = add_job(app, tenant, run(2, 2.0), status="running", training={"epochs": 3, "batch_size": 16, "seed": 7})
    body = api("GET", "/v1/jobs/compare", 200, query={"ids": f"{a},{b},{c}"}).get_json()

    assert [j["id"] for j in body["jobs"]] == [a, b, c]
    assert [j["seed"] for j in body["jobs"]] == [1, 1, 7]
    assert body["jobs"][0]["best"] == {"monitor": "loss", "value": 1 / 3, "epoch": 3}
    assert [j["epochs_run"] for j in body["jobs"]] == [3, 3, 2]
    assert body["spec_diff"] == {"optimizer.learning_rate": [0.01, 0.001, 0.01], "training.seed": [1, 1, 7]}
    # The running job has no environment yet: every field it lacks shows null.
    assert body["environment_diff"]["keras"] == ["3.6.0", "3.7.0", None]
    assert body["environment_diff"]["device.kind"] == ["cpu", "cpu", None]
    assert body["metrics"] == ["loss", "accuracy", "learning_rate"]  # never `seconds`
    assert [row["epoch"] for row in body["epochs"]] == [1, 2, 3]
    assert body["epochs"][0]["values"]["loss"] == [1.0, 1.0, 2.0]
    assert body["epochs"][2]["values"]["loss"] == [1 / 3, 0.3, None]
    # Only a and b share a seed: they part at epoch 3.
    assert len(body["pairs"]) == 1
    pair = body["pairs"][0]
    assert (pair["ids"], pair["seed"], pair["identical"], pair["first_divergent_epoch"]) == ([a, b], 1, False, 3)
    assert abs(pair["max_abs_diff"]["loss"] - (1 / 3 - 0.3)) < 1e-12 and pair["max_abs_diff"]["accuracy"] == 0.0


@pytest.mark.parametrize("ids", [None, "", "{a}", "{a},{a}", "{a},,{b}", "{a},{b},",
                                 ",".join(["{a}"] * 9)])
def test_compare_refuses_anything_but_2_to_8_different_ids(api: Api, app: Any, tenants: Any, ids: str | None) -> None:
    tenant = tenants["mine"][1]
    a, b = add_job(app, tenant, run(1)), add_job(app, tenant, run(1))
    query = None if ids is None else {"ids": ids.format(a=a, b=b)}
    resp = api("GET", "/v1/jobs/compare", 422, query=query, request_valid=ids not in (None, ""))
    assert fields(resp) == ["query.ids"]


def test_compare_refuses_nine_different_jobs_and_a_repeated_parameter(api: Api, app: Any, tenants: Any) -> None:
    ids = [add_job(app, tenants["mine"][1], {}) for _ in range(9)]
    assert fields(api("GET", "/v1/jobs/compare", 422, query={"ids": ",".join(ids)})) == ["query.ids"]
    resp = api.client.get(f"/v1/jobs/compare?ids={ids[0]},{ids[1]}&ids={ids[2]}", headers=api.headers)
    assert resp.status_code == 422 and fields(resp) == ["query.ids"]
    # Eight is the most.
    assert len(api("GET", "/v1/jobs/compare", 200, query={"ids": ",".join(ids[:8])}).get_json()["jobs"]) == 8


def test_another_tenants_job_or_an_id_never_issued_is_a_404(api: Api, app: Any, tenants: Any) -> None:
    mine = add_job(app, tenants["mine"][1], run(1))
    theirs = add_job(app, tenants["theirs"][1], run(1))
    for other in (theirs, "job_" + "0" * 32, "not-an-id"):
        resp = api("GET", "/v1/jobs/compare", 404, query={"ids": f"{mine},{other}"})
        assert other in resp.get_json()["detail"]
    # The owner compares its own.
    owner = Api(api.client, api.openapi, tenants["theirs"][0])
    assert owner("GET", "/v1/jobs/compare", 404, query={"ids": f"{theirs},{mine}"})


@pytest.fixture()
def statements(app: Any) -> Iterator[list[str]]:
    engine = app.extensions["trainyard"].db.engine
    seen: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    yield seen
    event.remove(engine, "before_cursor_execute", count)


def test_compare_costs_the_same_queries_for_2_jobs_of_2_epochs_and_8_of_60(api: Api, app: Any, tenants: Any,
                                                                          statements: list[str]) -> None:
    tenant = tenants["mine"][1]
    small = [add_job(app, tenant, run(2)) for _ in range(2)]
    large = [add_job(app, tenant, run(60)) for _ in range(8)]
    counts = []
    for ids in (small, large):
        statements.clear()
        body = api("GET", "/v1/jobs/compare", 200, query={"ids": ",".join(ids)}).get_json()
        # The token's lookup may be cached or not: count the statements that read jobs or their metrics.
        counts.append(len([s for s in statements if "FROM jobs" in s or "FROM epoch_metrics" in s]))
    assert len(body["epochs"]) == 60 and len(body["pairs"]) == 28
    assert counts == [2, 2], statements


# --- replay ----------------------------------------------------------------------------------------------


def test_a_replay_has_the_same_spec_and_is_submitted_like_any_job(api: Api, app: Any, tenants: Any) -> None:
    original = add_job(app, tenants["mine"][1], run(2), environment=ENV, labels={"team": "vision"})
    resp = api("POST", f"/v1/jobs/{original}/replay", 201, headers={"Idempotency-Key": f"replay-{original}"})
    replay = resp.get_json()
    assert resp.headers["Location"] == f"/v1/jobs/{replay['id']}"
    assert (replay["replay_of"], replay["reproduction"], replay["status"]) == (original, None, "queued")
    assert replay["parent"] is None
    first = api("GET", f"/v1/jobs/{original}", 200).get_json()
    assert replay["spec"] == first["spec"] and replay["labels"] == {"team": "vision"}
    # The same key again: the same replay, not a second one.
    again = api("POST", f"/v1/jobs/{original}/replay", 201, headers={"Idempotency-Key": f"replay-{original}"})
    assert again.get_json()["id"] == replay["id"] and again.headers["Idempotent-Replayed"] == "true"
    # An empty object is no body too.
    assert api("POST", f"/v1/jobs/{original}/replay", 201, json_body={}).get_json()["replay_of"] == original


def test_a_replay_cancelled_before_it_ran_carries_a_reproduction_that_is_not_identical(api: Api, app: Any,
                                                                                       tenants: Any) -> None:
    original = add_job(app, tenants["mine"][1], run(2), environment=ENV)
    replay = api("POST", f"/v1/jobs/{original}/replay", 201).get_json()
    api("POST", f"/v1/jobs/{replay['id']}/cancel", 202)
    # The session's worker (when an earlier test started one) may have picked the replay up first: then the
    # cancel ends it at its next batch, instead of at once.
    cancelled = wait_until(lambda: (body := api("GET", f"/v1/jobs/{replay['id']}", 200).get_json())["status"]
                           == "cancelled" and body, 60, what="the replay to be cancelled")
    # The lifecycle's end transaction wrote it: the runs part at epoch 1, whether or not an epoch ran.
    reproduction = cancelled["reproduction"]
    assert (reproduction["identical"], reproduction["first_divergent_epoch"]) == (False, 1)
    if cancelled["environment"] is None:  # no worker started it
        assert reproduction == {"identical": False, "first_divergent_epoch": 1, "max_abs_diff": {},
                                "environment_diff": {path: [value, None] for path, value in _leaves(ENV).items()}}
    with app.extensions["trainyard"].db.session() as s:
        assert s.execute(select(Job.reproduction).where(Job.id == replay["id"])).scalar_one() == \
            cancelled["reproduction"]


def _leaves(doc: dict[str, Any]) -> dict[str, Any]:
    from trainyard.compare import leaves

    return leaves(doc)


def test_only_an_ended_job_is_replayed(api: Api, app: Any, tenants: Any) -> None:
    running = add_job(app, tenants["mine"][1], run(1), status="running")
    assert "running" in api("POST", f"/v1/jobs/{running}/replay", 409).get_json()["detail"]


def test_a_replay_takes_no_options_and_not_another_tenants_job(api: Api, app: Any, tenants: Any) -> None:
    mine = add_job(app, tenants["mine"][1], run(1))
    theirs = add_job(app, tenants["theirs"][1], run(1))
    resp = api("POST", f"/v1/jobs/{mine}/replay", 422, json_body={"seed": 3}, request_valid=False)
    assert fields(resp) == ["seed"]
    api("POST", f"/v1/jobs/{theirs}/replay", 404)
    api("POST", f"/v1/jobs/{theirs}/replay", 404, json_body={"seed": 3}, request_valid=False)


def test_a_replay_counts_against_the_quota_and_the_submit_rate_limit(settings: Any, app: Any) -> None:
    from service import create_app
    from service.auth import create_token

    strict = create_app(replace(settings, max_active_jobs_per_tenant=1, rate_limit="1000 per minute",
                                rate_limit_submit="3 per minute"))
    try:
        client = strict.test_client()
        with strict.extensions["trainyard"].db.session() as s:
            issued = create_token(s, f"replay-quota-{random.getrandbits(32)}")
        headers = {"Authorization": f"Bearer {issued.token}"}
        original = add_job(app, issued.tenant_id, run(1))
        first = client.post(f"/v1/jobs/{original}/replay", headers=headers)
        assert first.status_code == 201, first.get_json()
        # One job queued is this tenant's ceiling: the second replay waits for it.
        refused = client.post(f"/v1/jobs/{original}/replay", headers=headers)
        assert refused.status_code == 429 and refused.get_json()["active_jobs"] == 1, refused.get_json()
        first_id = first.get_json()["id"]
        assert client.post(f"/v1/jobs/{first_id}/cancel", headers=headers).status_code == 202
        # A worker of the session (when an earlier test started one) may be running it: it frees the slot on ending.
        wait_until(lambda: client.get(f"/v1/jobs/{first_id}", headers=headers).get_json()["status"] == "cancelled",
                   60, what="the first replay to end")
        # Three submits a minute: the third request was the last one allowed.
        third = client.post(f"/v1/jobs/{original}/replay", headers=headers)
        assert third.status_code == 201, third.get_json()
        client.post(f"/v1/jobs/{third.get_json()['id']}/cancel", headers=headers)
        limited = client.post(f"/v1/jobs/{original}/replay", headers=headers)
        assert limited.status_code == 429 and "submissions" in limited.get_json()["detail"], limited.get_json()
    finally:
        strict.extensions["trainyard_events"].close()
