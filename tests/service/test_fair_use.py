"""Fair use: a per-tenant ceiling on jobs queued or running, and request rate limits per token, both
answered as 429 problems with `Retry-After`; rate-limit counts shared through Redis like production."""
from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from service import create_app
from trainyard.settings import Settings
from tests.conftest import tiny_spec, wait_until

# Long enough that a job stays queued or running (so active) while a test looks at it; cancelled after.
LONG = {"epochs": 5000, "batch_size": 16, "seed": 1}


def _app(settings: Any, **changes: Any) -> Any:
    return create_app(replace(settings, **changes))


@pytest.fixture()
def quota_client(settings: Any) -> Iterator[Any]:
    client = _app(settings, max_active_jobs_per_tenant=2).test_client()
    client.created = []  # type: ignore[attr-defined]
    yield client
    for job_id, headers in client.created:  # type: ignore[attr-defined]
        client.post(f"/v1/jobs/{job_id}/cancel", headers=headers)


def _submit(client: Any, headers: dict[str, str], **extra: str) -> Any:
    resp = client.post("/v1/jobs", json=tiny_spec(training=LONG), headers={**headers, **extra})
    if resp.status_code == 201:
        client.created.append((resp.get_json()["id"], headers))
    return resp


def test_active_job_quota_is_429_with_retry_after(quota_client: Any, make_token: Any) -> None:
    headers = {"Authorization": f"Bearer {make_token('quota-tenant')}"}
    first, second = _submit(quota_client, headers), _submit(quota_client, headers)
    assert (first.status_code, second.status_code) == (201, 201)
    refused = _submit(quota_client, headers)
    assert refused.status_code == 429
    assert refused.mimetype == "application/problem+json"
    assert int(refused.headers["Retry-After"]) > 0
    body = refused.get_json()
    assert body["status"] == 429 and body["active_jobs"] == 2 and body["limit"] == 2
    # With an Idempotency-Key too: the quota holds on that path, and a replay of an accepted key is free.
    assert _submit(quota_client, headers, **{"Idempotency-Key": "q-1"}).status_code == 429
    # Another tenant has its own quota.
    assert _submit(quota_client, {"Authorization": f"Bearer {make_token('quota-other')}"}).status_code == 201
    # Ending a job frees its slot.
    first_id = first.get_json()["id"]
    assert quota_client.post(f"/v1/jobs/{first_id}/cancel", headers=headers).status_code == 202
    # A worker of the session (when an earlier test started one) may be running it: the slot frees once it ends.
    wait_until(lambda: quota_client.get(f"/v1/jobs/{first_id}", headers=headers).get_json()["status"] == "cancelled",
               60, what="the cancelled job to end")
    assert _submit(quota_client, headers, **{"Idempotency-Key": "q-2"}).status_code == 201
    assert _submit(quota_client, headers, **{"Idempotency-Key": "q-2"}).headers.get("Idempotent-Replayed") == "true"


def _submit_at_once(app: Any, headers: dict[str, str], n: int) -> tuple[list[int], list[str]]:
    """`n` submissions released together by a barrier: their statuses and the ids of the accepted jobs."""
    statuses: list[int] = []
    created: list[str] = []
    barrier = threading.Barrier(n)

    def submit() -> None:
        client = app.test_client()
        barrier.wait()
        resp = client.post("/v1/jobs", json=tiny_spec(training=LONG), headers=headers)
        statuses.append(resp.status_code)
        if resp.status_code == 201:
            created.append(resp.get_json()["id"])

    threads = [threading.Thread(target=submit) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return statuses, created


def test_concurrent_submissions_cannot_overshoot_the_quota(settings: Any, make_token: Any) -> None:
    app = _app(settings, max_active_jobs_per_tenant=2)
    headers = {"Authorization": f"Bearer {make_token('quota-race')}"}
    statuses, created = _submit_at_once(app, headers, 6)
    client = app.test_client()
    for job_id in created:
        client.post(f"/v1/jobs/{job_id}/cancel", headers=headers)
    assert sorted(statuses) == [201, 201, 429, 429, 429, 429]


def test_concurrent_submissions_on_the_fast_path_stop_exactly_at_the_quota(settings: Any, make_token: Any) -> None:
    # A cap of 20 (>= 2 x QUOTA_SLOTS): a tenant's submissions do not wait for each other while it is far from
    # the cap, and near it are made again exclusively (service/api/jobs.py). 30 at once: exactly 20 get in.
    from service.api.jobs import QUOTA_SLOTS

    limit = 20
    assert limit >= 2 * QUOTA_SLOTS
    app = _app(settings, max_active_jobs_per_tenant=limit, rate_limit_submit="off")
    headers = {"Authorization": f"Bearer {make_token('quota-fast-race')}"}
    statuses, created = _submit_at_once(app, headers, 30)
    client = app.test_client()
    active = [j for j in client.get("/v1/jobs?limit=200", headers=headers).get_json()["jobs"]
              if j["status"] in ("queued", "running")]
    for job_id in created:
        client.post(f"/v1/jobs/{job_id}/cancel", headers=headers)
    assert sorted(statuses) == [201] * limit + [429] * 10
    assert len(active) == limit


def test_rate_limit_per_token_is_429_with_retry_after(settings: Any, make_token: Any) -> None:
    client = _app(settings, rate_limit="5 per minute").test_client()
    headers = {"Authorization": f"Bearer {make_token('chatty')}"}
    assert [client.get("/v1/jobs", headers=headers).status_code for _ in range(5)] == [200] * 5
    limited = client.get("/v1/jobs", headers=headers)
    assert limited.status_code == 429
    assert limited.mimetype == "application/problem+json"
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert limited.get_json()["status"] == 429
    # Another token is counted apart; probes and the API document are never limited.
    assert client.get("/v1/jobs", headers={"Authorization": f"Bearer {make_token('quiet')}"}).status_code == 200
    for path in ("/healthz", "/readyz", "/openapi.yaml"):
        assert all(client.get(path).status_code != 429 for _ in range(7)), path


def test_guessing_tokens_is_throttled_too(settings: Any) -> None:
    client = _app(settings, rate_limit="3 per minute").test_client()
    bad = {"Authorization": "Bearer ty_not-a-real-token"}
    assert [client.get("/v1/jobs", headers=bad).status_code for _ in range(4)] == [401, 401, 401, 429]


def test_counts_are_shared_by_every_api_process_through_redis(settings: Any, make_token: Any) -> None:
    assert settings.ratelimit_storage_url == settings.broker_url  # Redis broker -> Redis counts
    first, second = (_app(settings, rate_limit="4 per minute").test_client() for _ in range(2))
    headers = {"Authorization": f"Bearer {make_token('two-processes')}"}
    assert [c.get("/v1/jobs", headers=headers).status_code for c in (first, second, first, second)] == [200] * 4
    assert second.get("/v1/jobs", headers=headers).status_code == 429


def test_rate_limit_storage_down_lets_requests_through(settings: Any, make_token: Any) -> None:
    client = _app(settings, rate_limit="2 per minute", ratelimit_storage_url="redis://127.0.0.1:1/0").test_client()
    headers = {"Authorization": f"Bearer {make_token('storage-down')}"}
    assert [client.get("/v1/jobs", headers=headers).status_code for _ in range(3)] == [200] * 3


def test_rate_limit_settings(settings: Any) -> None:
    embedded = Settings.from_env({"TRAINYARD_VAR_DIR": "/tmp/x"})
    assert embedded.ratelimit_storage_url == "memory://" and embedded.rate_limit == "100000 per minute"
    assert embedded.max_active_jobs_per_tenant == 50 and embedded.max_running_jobs_per_tenant == 4
    redis = Settings.from_env({"TRAINYARD_VAR_DIR": "/tmp/x", "TRAINYARD_BROKER_URL": "redis://h:6379/2",
                               "TRAINYARD_RATE_LIMIT": "", "TRAINYARD_MAX_ACTIVE_JOBS_PER_TENANT": "3",
                               "TRAINYARD_MAX_RUNNING_JOBS_PER_TENANT": "1"})
    assert redis.ratelimit_storage_url == "redis://h:6379/2" and redis.rate_limit == ""
    assert redis.max_active_jobs_per_tenant == 3 and redis.max_running_jobs_per_tenant == 1
    explicit = Settings.from_env({"TRAINYARD_VAR_DIR": "/tmp/x", "TRAINYARD_RATELIMIT_STORAGE_URL": "memory://"})
    assert explicit.ratelimit_storage_url == "memory://"
    from trainyard.settings import SettingsError

    with pytest.raises(SettingsError, match="TRAINYARD_RATE_LIMIT"):
        create_app(replace(settings, rate_limit="lots"))


def test_workers_defer_a_tenants_jobs_beyond_its_running_limit(app: Any, make_token: Any) -> None:
    """The worker's claim (trainyard/lifecycle.py) against the real database: with one job of the tenant
    training, a second waits queued for a later delivery, and starts once the first has ended."""
    from datetime import timedelta

    from service.auth import authenticate
    from trainyard.db.models import Job, utcnow
    from trainyard.spec import validate_spec
    from trainyard.lifecycle import claim

    db = app.extensions["trainyard"].db
    with db.session() as s:
        tenant = authenticate(s, make_token("running-cap")).tenant_id
    spec = validate_spec(tiny_spec())
    # Dated ahead so the reapers of any test worker leave these rows alone (no message is ever sent).
    later = utcnow() + timedelta(hours=1)
    with db.session() as s:
        jobs = [Job(tenant_id=tenant, status="queued", spec=spec, epochs=3, created_at=later, enqueued_at=later)
                for _ in range(2)]
        s.add_all(jobs)
        s.flush()
        first, second = (j.id for j in jobs)
    try:
        assert claim(db, first, "w1", 30, max_running_per_tenant=1) is not None
        assert claim(db, second, "w2", 30, max_running_per_tenant=1) is None
        with db.session() as s:
            deferred = s.get(Job, second)
            assert (deferred.status, deferred.enqueued_at, deferred.attempts) == ("queued", None, 0)
        assert claim(db, second, "w2", 30, max_running_per_tenant=2) is not None  # a higher limit lets it run
        with db.session() as s:
            s.get(Job, first).status = s.get(Job, second).status = "queued"
            s.get(Job, second).attempts = 0
        assert claim(db, first, "w1", 30, max_running_per_tenant=1) is not None
        with db.session() as s:
            s.get(Job, first).status = "succeeded"  # the first ends: its slot is free
        assert claim(db, second, "w2", 30, max_running_per_tenant=1) is not None
    finally:
        with db.session() as s:
            for job_id in (first, second):
                s.delete(s.get(Job, job_id))


def test_processes_lease_hits_and_never_exceed_the_shared_limit(settings: Any, make_token: Any) -> None:
    # A large limit is counted in leases (service/ratelimit.py): each process takes several hits from Redis at
    # once and spends them itself. Two processes together still admit no more than the limit, and hold back
    # at most a lease each (640 / LEASE_FRACTION = 20) when the window runs out.
    first, second = (_app(settings, rate_limit="640 per minute").test_client() for _ in range(2))
    headers = {"Authorization": f"Bearer {make_token('leases')}"}
    missing = "/v1/jobs/job_" + "0" * 32  # a 404 after the token check: no database work
    statuses = [c.get(missing, headers=headers).status_code for _ in range(400) for c in (first, second)]
    assert set(statuses) == {404, 429}
    assert 640 - 2 * 20 <= statuses.count(404) <= 640
    assert statuses[-20:] == [429] * 20  # once refused, refused until the window ends
    assert 1 <= int(first.get(missing, headers=headers).headers["Retry-After"]) <= 60


def test_a_lease_saves_storage_round_trips() -> None:
    from limits import parse
    from limits.storage import MemoryStorage

    from service.ratelimit import LeasedLimits

    class CountingStorage(MemoryStorage):
        increments = 0

        def incr(self, key: str, expiry: float, amount: int = 1) -> int:
            CountingStorage.increments += 1
            return super().incr(key, expiry, amount)

    storage = CountingStorage()
    processes = [LeasedLimits(storage), LeasedLimits(storage)]
    item = parse("10000 per minute")
    refused = [processes[i % 2].check([item], "k") for i in range(11_000)]
    assert sum(r is None for r in refused) <= 10_000
    assert sum(r is None for r in refused) >= 10_000 - 2 * 100
    assert CountingStorage.increments < 11_000 / 20
    # A small limit is counted hit by hit: exactly its count is admitted.
    small = parse("5 per minute")
    assert [processes[i % 2].check([small], "s") is None for i in range(7)] == [True] * 5 + [False] * 2
