"""The jobs API against real Postgres (Flask test client; no worker needed for these)."""
from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import tiny_spec, wait_until


def test_submit_returns_201_with_location_and_normalised_spec(client: Any, auth: dict[str, str]) -> None:
    resp = client.post("/v1/jobs", json=tiny_spec(), headers=auth)
    assert resp.status_code == 201, resp.get_json()
    body = resp.get_json()
    assert resp.headers["Location"] == f"/v1/jobs/{body['id']}"
    assert body["status"] in ("queued", "running", "succeeded")
    assert body["spec"]["optimizer"]["learning_rate"] == 0.01
    assert body["spec"]["training"]["shuffle"] is True  # default filled
    assert body["progress"] == {"epoch": 0, "epochs": 3}
    assert body["links"]["metrics"] == f"/v1/jobs/{body['id']}/metrics"


def test_malformed_json_is_400_problem(client: Any, auth: dict[str, str]) -> None:
    resp = client.post("/v1/jobs", data="{not json", headers={**auth, "Content-Type": "application/json"})
    assert resp.status_code == 400
    assert resp.mimetype == "application/problem+json"
    assert resp.get_json()["status"] == 400
    assert "not valid JSON" in resp.get_json()["detail"]


def test_wrong_media_type_is_415(client: Any, auth: dict[str, str]) -> None:
    resp = client.post("/v1/jobs", data="x=1", headers={**auth, "Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status_code == 415
    assert resp.mimetype == "application/problem+json"


def test_invalid_spec_is_422_with_field_paths(client: Any, auth: dict[str, str]) -> None:
    spec = tiny_spec()
    spec["model"]["layers"][0]["units"] = 0
    spec["optimizer"] = {"type": "adam", "learning_rate": -1}
    resp = client.post("/v1/jobs", json=spec, headers=auth)
    assert resp.status_code == 422
    fields = {e["field"] for e in resp.get_json()["errors"]}
    assert "model.layers[0].units" in fields
    assert "optimizer.learning_rate" in fields


def test_non_object_body_is_422(client: Any, auth: dict[str, str]) -> None:
    resp = client.post("/v1/jobs", json=[1, 2], headers=auth)
    assert resp.status_code == 422
    assert resp.mimetype == "application/problem+json"


def test_missing_and_bad_tokens_are_401(client: Any) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic abc"}):
        resp = client.get("/v1/jobs", headers=headers)
        assert resp.status_code == 401
        assert resp.mimetype == "application/problem+json"
        assert "Bearer" in resp.headers["WWW-Authenticate"]


def test_revoked_token_is_401(app: Any, client: Any) -> None:
    from service.auth import create_token, revoke_token

    with app.extensions["trainyard"].db.session() as s:
        issued = create_token(s, "revoked-tenant")
    headers = {"Authorization": f"Bearer {issued.token}"}
    assert client.get("/v1/jobs", headers=headers).status_code == 200
    with app.extensions["trainyard"].db.session() as s:
        assert revoke_token(s, issued.token_id)
    # Refused once the API's token cache lets go of it (TRAINYARD_TOKEN_CACHE_SECONDS, 1 s in tests).
    wait_until(lambda: client.get("/v1/jobs", headers=headers).status_code == 401, 5, 0.1, "the revoked token's 401")


def test_list_is_newest_first_with_keyset_pagination_and_status_filter(client: Any, make_token: Any) -> None:
    headers = {"Authorization": f"Bearer {make_token('paginator')}"}
    ids = [client.post("/v1/jobs", json=tiny_spec(name=f"j{i}"), headers=headers).get_json()["id"] for i in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        url = "/v1/jobs?limit=2" + (f"&cursor={cursor}" if cursor else "")
        body = client.get(url, headers=headers).get_json()
        seen += [j["id"] for j in body["jobs"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids))
    # The newest job is last in the queue, so it is still queued (or at worst running) when cancelled.
    assert client.post(f"/v1/jobs/{ids[-1]}/cancel", headers=headers).status_code == 202
    wait_until(lambda: client.get(f"/v1/jobs/{ids[-1]}", headers=headers).get_json()["status"] == "cancelled",
               30, what="the cancelled job to end")
    cancelled = client.get("/v1/jobs?status=cancelled", headers=headers).get_json()["jobs"]
    assert [j["id"] for j in cancelled] == [ids[-1]]
    assert client.get("/v1/jobs?status=bogus", headers=headers).status_code == 422
    assert client.get("/v1/jobs?limit=0", headers=headers).status_code == 422
    assert client.get("/v1/jobs?cursor=garbage", headers=headers).status_code == 422


def test_other_tenants_jobs_answer_404(client: Any, auth: dict[str, str], other_auth: dict[str, str]) -> None:
    job_id = client.post("/v1/jobs", json=tiny_spec(), headers=auth).get_json()["id"]
    for method, path in (
        ("get", f"/v1/jobs/{job_id}"),
        ("get", f"/v1/jobs/{job_id}/metrics"),
        ("get", f"/v1/jobs/{job_id}/checkpoints"),
        ("get", f"/v1/jobs/{job_id}/checkpoints/best"),
        ("post", f"/v1/jobs/{job_id}/cancel"),
        ("delete", f"/v1/jobs/{job_id}"),
    ):
        resp = getattr(client, method)(path, headers=other_auth)
        assert resp.status_code == 404, (method, path)
        assert resp.mimetype == "application/problem+json"
    assert job_id not in [j["id"] for j in client.get("/v1/jobs", headers=other_auth).get_json()["jobs"]]
    assert client.get(f"/v1/jobs/{job_id}", headers=auth).status_code == 200


def test_unknown_route_and_method_are_problems(client: Any, auth: dict[str, str]) -> None:
    resp = client.get("/v1/nothing", headers=auth)
    assert resp.status_code == 404 and resp.mimetype == "application/problem+json"
    resp = client.put("/v1/jobs", headers=auth)
    assert resp.status_code == 405 and resp.mimetype == "application/problem+json"


def test_metrics_after_must_be_a_number(client: Any, auth: dict[str, str]) -> None:
    job_id = client.post("/v1/jobs", json=tiny_spec(), headers=auth).get_json()["id"]
    assert client.get(f"/v1/jobs/{job_id}/metrics?after=x", headers=auth).status_code == 422


def test_operator_limits_from_settings_are_enforced(settings: Any, make_token: Any) -> None:
    from service import create_app
    from trainyard.settings import Settings

    limited = Settings.from_env({
        "TRAINYARD_DATABASE_URL": settings.database_url, "TRAINYARD_BROKER_URL": settings.broker_url,
        "TRAINYARD_VAR_DIR": str(settings.var_dir),
        "TRAINYARD_MAX_EPOCHS": "5", "TRAINYARD_MAX_PARAMS": "100", "TRAINYARD_MAX_LAYERS": "2"})
    client = create_app(limited).test_client()
    headers = {"Authorization": f"Bearer {make_token('limited')}"}
    too_long = client.post("/v1/jobs", json=tiny_spec(training={"epochs": 6}), headers=headers)
    assert too_long.status_code == 422
    fields = {e["field"] for e in too_long.get_json()["errors"]}
    assert "training.epochs" in fields
    big = tiny_spec(model={"input_shape": [4], "layers": [{"type": "dense", "units": 64, "activation": "relu"},
                                                          {"type": "dense", "units": 3, "activation": "softmax"}]})
    resp = client.post("/v1/jobs", json=big, headers=headers)
    assert resp.status_code == 422 and "model" in {e["field"] for e in resp.get_json()["errors"]}
    deep = tiny_spec(model={"input_shape": [4], "layers": [{"type": "dense", "units": 3, "activation": "relu"}] * 2
                            + [{"type": "dense", "units": 3, "activation": "softmax"}]})
    assert client.post("/v1/jobs", json=deep, headers=headers).status_code == 422
    # Within the limits the same app accepts a job.
    small = tiny_spec(model={"input_shape": [4], "layers": [{"type": "dense", "units": 3, "activation": "softmax"}]},
                      training={"epochs": 5, "batch_size": 16, "seed": 1})
    assert client.post("/v1/jobs", json=small, headers=headers).status_code == 201


@pytest.mark.parametrize("query", ["name=%00", "name=a%00b", "label=team:%00", "sort=%00", "status=%00",
                                   "cursor=%00", "n%00ame=x"])
def test_a_nul_in_any_query_parameter_is_a_422_naming_it(client: Any, auth: dict[str, str], query: str) -> None:
    # PostgreSQL's text cannot hold NUL: a filter carrying one used to reach the driver and answer 500.
    resp = client.get(f"/v1/jobs?{query}", headers=auth)
    assert resp.status_code == 422, resp.get_data(as_text=True)[:300]
    assert resp.mimetype == "application/problem+json"
    assert resp.get_json()["errors"][0]["field"] == "query." + query.split("=")[0].replace("%00", "")
