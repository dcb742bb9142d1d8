"""Labels and search: labels in the spec, `PATCH /v1/jobs/{id}` (name and labels, a merge patch, If-Match),
and `GET /v1/jobs?label=&name=&sort=` paged by keyset, on Postgres and on the embedded SQLite alike."""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import select

from tests.conftest import tiny_spec
from trainyard.db.models import Job, JobLabel
from trainyard.spec import validate_spec
from trainyard.spec.labels import MAX_LABELS
from trainyard.submission import new_job


@dataclass
class Api:
    client: Any
    db: Any
    token: Any  # tenant name -> (headers, tenant id)


@pytest.fixture()
def api(request: pytest.FixtureRequest, either_app: Any) -> Api:
    from service.auth import create_token

    db = either_app.extensions["trainyard"].db

    def token(tenant: str) -> tuple[dict[str, str], str]:
        with db.session() as s:
            issued = create_token(s, f"{tenant}-{request.node.name}-{random.getrandbits(32)}")
        return {"Authorization": f"Bearer {issued.token}"}, issued.tenant_id

    return Api(either_app.test_client(), db, token)


def add_jobs(api: Api, tenant_id: str, rows: list[dict[str, Any]]) -> list[str]:
    """Jobs written as a submission writes them (new_job: the row and its label rows), with the given
    status and best value, without a queue: the list reads rows only."""
    ids = []
    with api.db.session() as s:
        for row in rows:
            spec = validate_spec(tiny_spec(name=row.get("name"), labels=row.get("labels", {})))
            job = new_job(tenant_id, spec)
            job.status = row.get("status", "succeeded")
            job.best_value = row.get("best")
            job.best_epoch = None if row.get("best") is None else 1
            s.add(job)
            ids.append(job.id)
    return ids


def listed(api: Api, headers: dict[str, str], query: str, limit: int = 3) -> list[str]:
    """Every page of `GET /v1/jobs?<query>`, followed by its cursor, as job ids."""
    ids: list[str] = []
    cursor = None
    while True:
        url = f"/v1/jobs?limit={limit}&{query}" + (f"&cursor={cursor}" if cursor else "")
        resp = api.client.get(url, headers=headers)
        assert resp.status_code == 200, resp.get_json()
        body = resp.get_json()
        ids += [job["id"] for job in body["jobs"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return ids


def problem_fields(resp: Any) -> dict[str, str]:
    assert resp.status_code == 422, resp.get_json()
    return {e["field"]: e["message"] for e in resp.get_json()["errors"]}


# --- labels in the spec ------------------------------------------------------------------------------


def test_submitted_labels_show_on_the_job_and_in_its_spec(api: Api) -> None:
    headers, _ = api.token("submit")
    labels = {"team": "vision", "data.version": "2026-03", "baseline": ""}
    resp = api.client.post("/v1/jobs", json=tiny_spec(labels=labels), headers=headers)
    assert resp.status_code == 201, resp.get_json()
    job = resp.get_json()
    assert job["labels"] == labels and job["spec"]["labels"] == labels
    assert api.client.get(f"/v1/jobs/{job['id']}", headers=headers).get_json()["labels"] == labels
    unlabelled = api.client.post("/v1/jobs", json=tiny_spec(), headers=headers).get_json()
    assert unlabelled["labels"] == {} and unlabelled["spec"]["labels"] == {}
    with api.db.session() as s:
        rows = s.execute(select(JobLabel.key, JobLabel.value).where(JobLabel.job_id == job["id"])).all()
    assert dict(rows) == labels


def test_bad_labels_are_422_naming_each_one(api: Api) -> None:
    headers, _ = api.token("bad-labels")
    bad = {"Team": "x", "-edge": "x", "1st": "x", "a" * 64: "x", "ok": 5, "nl": "a\nb", "long": "v" * 257, "fine": "yes"}
    fields = problem_fields(api.client.post("/v1/jobs", json=tiny_spec(labels=bad), headers=headers))
    assert set(fields) == {"labels.Team", "labels.-edge", "labels.1st", f"labels.{'a' * 64}", "labels.ok",
                           "labels.nl", "labels.long"}
    assert "lower-case" in fields["labels.Team"] and "string" in fields["labels.ok"]
    assert "256" in fields["labels.long"] and "control" in fields["labels.nl"]
    too_many = {f"k{i}": "v" for i in range(MAX_LABELS + 1)}
    fields = problem_fields(api.client.post("/v1/jobs", json=tiny_spec(labels=too_many), headers=headers))
    assert list(fields) == ["labels"] and str(MAX_LABELS) in fields["labels"]
    fields = problem_fields(api.client.post("/v1/jobs", json=tiny_spec(labels=["team"]), headers=headers))
    assert fields == {"labels": "Must be an object."}


# --- PATCH ---------------------------------------------------------------------------------------------


def test_patch_merges_labels_renames_and_keeps_the_submitted_spec(api: Api) -> None:
    headers, tenant = api.token("patch")
    [job_id] = add_jobs(api, tenant, [{"name": "first", "labels": {"team": "vision", "stage": "draft"},
                                       "status": "cancelled"}])  # any status, final ones too
    resp = api.client.patch(f"/v1/jobs/{job_id}", json={"labels": {"stage": None, "owner": "ana", "team": "nlp"},
                                                       "name": "renamed (v2)"}, headers=headers)
    assert resp.status_code == 200, resp.get_json()
    job = resp.get_json()
    assert job["labels"] == {"team": "nlp", "owner": "ana"} and job["name"] == "renamed (v2)"
    assert job["spec"]["labels"] == {"team": "vision", "stage": "draft"} and job["spec"]["name"] == "first"
    read = api.client.get(f"/v1/jobs/{job_id}", headers=headers)
    assert read.get_json() == job and read.headers["ETag"] == resp.headers["ETag"]
    # Only what is sent changes; a null name clears it; an empty patch changes nothing.
    job = api.client.patch(f"/v1/jobs/{job_id}", json={"name": None}, headers=headers).get_json()
    assert job["name"] is None and job["labels"] == {"team": "nlp", "owner": "ana"}
    same = api.client.patch(f"/v1/jobs/{job_id}", json={}, headers=headers,
                            content_type="application/merge-patch+json")
    assert same.status_code == 200 and same.get_json() == job
    with api.db.session() as s:
        rows = s.execute(select(JobLabel.key, JobLabel.value).where(JobLabel.job_id == job_id)).all()
        assert dict(rows) == {"team": "nlp", "owner": "ana"}  # the list filters on these
        assert s.get(Job, job_id).labels == {"team": "nlp", "owner": "ana"}
    # Deleting the job deletes its label rows (the foreign key cascades, on SQLite as on Postgres).
    assert api.client.delete(f"/v1/jobs/{job_id}", headers=headers).status_code == 204
    with api.db.session() as s:
        assert s.execute(select(JobLabel.key).where(JobLabel.job_id == job_id)).all() == []


def test_patch_refuses_other_fields_bad_values_and_too_many_labels(api: Api) -> None:
    headers, tenant = api.token("patch-bad")
    [job_id] = add_jobs(api, tenant, [{"labels": {f"k{i}": "v" for i in range(MAX_LABELS)}}])
    url = f"/v1/jobs/{job_id}"
    fields = problem_fields(api.client.patch(url, json={"loss": "mse", "lables": {}, "name": "a/b"}, headers=headers))
    assert "Cannot change after submission" in fields["loss"]
    assert fields["lables"] == "Unknown field. Did you mean labels?"
    assert "letter or digit" in fields["name"]
    fields = problem_fields(api.client.patch(url, json={"labels": {"Bad": "x", "k1": 3}}, headers=headers))
    assert set(fields) == {"labels.Bad", "labels.k1"}
    # 32 labels already: one more is refused, one more with one removed is not.
    fields = problem_fields(api.client.patch(url, json={"labels": {"extra": "x"}}, headers=headers))
    assert list(fields) == ["labels"] and "33" in fields["labels"]
    ok = api.client.patch(url, json={"labels": {"extra": "x", "k0": None}}, headers=headers)
    assert ok.status_code == 200 and len(ok.get_json()["labels"]) == MAX_LABELS
    assert api.client.patch(url, data="[1]", content_type="application/json", headers=headers).status_code == 422
    assert api.client.patch(url, data="{", content_type="application/json", headers=headers).status_code == 400
    assert api.client.patch(url, data="x", content_type="text/plain", headers=headers).status_code == 415


def test_patch_is_tenant_scoped_and_honours_if_match(api: Api) -> None:
    headers, tenant = api.token("patch-owner")
    other, _ = api.token("patch-other")
    [job_id] = add_jobs(api, tenant, [{"labels": {"team": "vision"}}])
    url = f"/v1/jobs/{job_id}"
    assert api.client.patch(url, json={"name": "mine"}, headers=other).status_code == 404
    assert api.client.patch("/v1/jobs/job_nope", json={"name": "x"}, headers=headers).status_code == 404
    assert api.client.get(url, headers=headers).get_json()["name"] is None  # nothing changed

    etag = api.client.get(url, headers=headers).headers["ETag"]
    first = api.client.patch(url, json={"labels": {"team": "nlp"}}, headers={**headers, "If-Match": etag})
    assert first.status_code == 200 and first.headers["ETag"] != etag
    stale = api.client.patch(url, json={"labels": {"team": "speech"}}, headers={**headers, "If-Match": etag})
    assert stale.status_code == 412 and stale.get_json()["type"].endswith("/precondition_failed")
    assert api.client.get(url, headers=headers).get_json()["labels"] == {"team": "nlp"}
    fresh = api.client.patch(url, json={"labels": {"team": "speech"}},
                             headers={**headers, "If-Match": first.headers["ETag"]})
    assert fresh.status_code == 200 and fresh.get_json()["labels"] == {"team": "speech"}
    star = api.client.patch(url, json={"name": "any"}, headers={**headers, "If-Match": "*"})
    assert star.status_code == 200


# --- the list ------------------------------------------------------------------------------------------


def test_list_filters_by_labels_and_name_substring(api: Api) -> None:
    headers, tenant = api.token("search")
    other, other_tenant = api.token("search-other")
    rows = [{"name": f"{['MNIST', 'cifar', 'Mnist_small', 'iris'][i % 4]}-{i}",
             "labels": {"team": ["vision", "nlp"][i % 2], **({"baseline": ""} if i % 3 == 0 else {}),
                        "exp": f"e{i % 5}"}} for i in range(24)]
    ids = add_jobs(api, tenant, rows)
    add_jobs(api, other_tenant, rows[:6])  # the same labels and names in another tenant: never listed
    newest_first = list(reversed(ids))

    def expect(predicate: Any) -> list[str]:
        return [job_id for job_id in newest_first if predicate(rows[ids.index(job_id)])]

    assert listed(api, headers, "label=team:vision") == expect(lambda r: r["labels"]["team"] == "vision")
    assert listed(api, headers, "label=baseline") == expect(lambda r: "baseline" in r["labels"])
    assert listed(api, headers, "label=baseline:") == expect(lambda r: "baseline" in r["labels"])
    assert listed(api, headers, "label=team:nlp&label=exp:e3") == expect(
        lambda r: r["labels"]["team"] == "nlp" and r["labels"]["exp"] == "e3")
    assert listed(api, headers, "label=team:nlp&label=baseline&name=mnist") == expect(
        lambda r: r["labels"]["team"] == "nlp" and "baseline" in r["labels"] and "mnist" in r["name"].lower())
    assert listed(api, headers, "name=mnist") == expect(lambda r: "mnist" in r["name"].lower())
    # `_` and `%` are themselves, not LIKE's wildcards.
    assert listed(api, headers, "name=t_s") == expect(lambda r: "t_s" in r["name"].lower())
    assert listed(api, headers, "name=%25") == []
    assert listed(api, headers, "label=team:robotics") == [] and listed(api, headers, "label=nothing") == []
    assert listed(api, headers, "label=team:vision&status=queued") == []
    # A label changed by PATCH is found by its new value only.
    api.client.patch(f"/v1/jobs/{ids[0]}", json={"labels": {"team": "robotics"}}, headers=headers)
    assert listed(api, headers, "label=team:robotics") == [ids[0]]
    assert ids[0] not in listed(api, headers, "label=team:vision")
    assert listed(api, other, "label=team:robotics") == []


def test_list_sorts_by_best_value_with_nulls_last_across_pages(api: Api) -> None:
    headers, tenant = api.token("sort")
    rng = random.Random(3)
    values = [None if i % 5 == 0 else round(rng.uniform(0, 1), 2) for i in range(23)]  # repeats: ties by id
    rows = [{"best": v, "labels": {"group": "a" if i % 3 else "b"}} for i, v in enumerate(values)]
    ids = add_jobs(api, tenant, rows)
    by_id = dict(zip(ids, values))
    with_value = [i for i in ids if by_id[i] is not None]
    without = [i for i in ids if by_id[i] is None]
    best_first = sorted(with_value, key=lambda i: (by_id[i], i), reverse=True) + sorted(without, reverse=True)
    worst_first = sorted(with_value, key=lambda i: (by_id[i], i)) + sorted(without)
    for limit in (1, 4, 7):
        assert listed(api, headers, "sort=-best_value", limit) == best_first
        assert listed(api, headers, "sort=best_value", limit) == worst_first
        group_a = [i for i in best_first if rows[ids.index(i)]["labels"]["group"] == "a"]
        assert listed(api, headers, "sort=-best_value&label=group:a", limit) == group_a
    assert listed(api, headers, "sort=-created_at", 5) == list(reversed(ids))
    page = api.client.get("/v1/jobs?sort=-best_value&limit=2", headers=headers).get_json()
    assert [j["best"]["value"] for j in page["jobs"]] == [by_id[i] for i in best_first[:2]]


def test_list_query_errors_name_the_parameter(api: Api) -> None:
    headers, tenant = api.token("list-errors")
    add_jobs(api, tenant, [{"best": 0.5}, {"best": 0.2}, {}])
    by_value = api.client.get("/v1/jobs?sort=-best_value&limit=1", headers=headers).get_json()["next_cursor"]
    newest = api.client.get("/v1/jobs?limit=1", headers=headers).get_json()["next_cursor"]
    assert by_value and newest
    for query, field, says in [
        ("sort=name", "query.sort", "-created_at, -best_value, best_value"),
        ("label=Team:x", "query.label", "lower-case"),
        ("label=" + "&label=".join(f"k{i}" for i in range(9)), "query.label", "At most 8"),
        ("name=" + "n" * 129, "query.name", "128"),
        ("name=", "query.name", "1 to 128"),
        (f"cursor={by_value}", "query.cursor", "sort=-best_value, not sort=-created_at"),
        (f"sort=best_value&cursor={by_value}", "query.cursor", "sort=-best_value, not sort=best_value"),
        (f"sort=-best_value&cursor={newest}", "query.cursor", "sort=-created_at, not sort=-best_value"),
        ("sort=-best_value&cursor=WyItYmVzdF92YWx1ZSIsICJ4IiwgImpvYl8xIl0", "query.cursor", "Not a valid cursor"),
    ]:
        fields = problem_fields(api.client.get(f"/v1/jobs?{query}", headers=headers))
        assert list(fields) == [field] and says in fields[field], (query, fields)
    # The cursors work with the sort that issued them.
    assert api.client.get(f"/v1/jobs?sort=-best_value&cursor={by_value}", headers=headers).status_code == 200
    assert api.client.get(f"/v1/jobs?cursor={newest}", headers=headers).status_code == 200


def test_a_sweeps_trials_carry_its_base_labels_and_are_found_by_them(client: Any, make_token: Any) -> None:
    from tests.service.test_sweeps_api import example_body

    headers = {"Authorization": f"Bearer {make_token(f'sweep-labels-{random.getrandbits(32)}')}"}
    body = example_body()
    # Long trials: should a session worker start one, it is still running when this test cancels it.
    body["base"] = {**body["base"], "labels": {"study": "lr-units"},
                    "training": {"epochs": 5000, "batch_size": 16, "seed": 0}}
    sweep = client.post("/v1/sweeps", json=body, headers=headers).get_json()
    try:
        trial_ids = {t["job_id"] for t in sweep["trials"]}
        assert len(trial_ids) == 2
        found = client.get("/v1/jobs?label=study:lr-units", headers=headers).get_json()["jobs"]
        assert {j["id"] for j in found} == trial_ids and all(j["labels"] == {"study": "lr-units"} for j in found)
    finally:
        client.post(f"/v1/sweeps/{sweep['id']}/cancel", headers=headers)
