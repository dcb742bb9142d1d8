"""Expensive operations (submitting jobs and sweeps, uploading data sets) count against stricter limits of
their own, on top of the general one: a token that hits its submit or upload limit still reads freely."""
from __future__ import annotations

import io
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from service import create_app
from trainyard.settings import Settings, SettingsError
from tests.conftest import tiny_spec

SWEEP = {"base": tiny_spec(), "search": {"model.layers[0].units": {"type": "grid", "values": [8, 16]}},
         "objective": {"metric": "loss", "mode": "min"}, "max_trials": 2, "parallelism": 1}


def _npz() -> bytes:
    buf = io.BytesIO()
    np.savez(buf, x_train=np.ones((10, 2), np.float32), y_train=np.arange(10) % 2)
    return buf.getvalue()


def _upload(client: Any, headers: dict[str, str]) -> Any:
    return client.post("/v1/datasets", headers=headers, content_type="multipart/form-data",
                       data={"file": (io.BytesIO(_npz()), "d.npz")})


@pytest.fixture()
def strict(settings: Any) -> Any:
    app = create_app(replace(settings, rate_limit="1000 per minute", rate_limit_submit="3 per minute",
                             rate_limit_uploads="1 per minute"))
    yield app.test_client()
    app.extensions["trainyard_events"].close()


def _cancel_all(client: Any, headers: dict[str, str]) -> None:
    for job in client.get("/v1/jobs?limit=200", headers=headers).get_json()["jobs"]:
        if job["status"] == "queued":
            client.post(f"/v1/jobs/{job['id']}/cancel", headers=headers)


def test_submits_trip_their_limit_while_reads_still_pass(strict: Any, make_token: Any) -> None:
    headers = {"Authorization": f"Bearer {make_token('submitter')}"}
    try:
        assert [strict.post("/v1/jobs", json=tiny_spec(), headers=headers).status_code for _ in range(2)] == [201] * 2
        sweep = strict.post("/v1/sweeps", json=SWEEP, headers=headers)  # jobs and sweeps share the count
        assert sweep.status_code == 201, sweep.get_json()
        strict.post(f"/v1/sweeps/{sweep.get_json()['id']}/cancel", headers=headers)
        for refused in (strict.post("/v1/jobs", json=tiny_spec(), headers=headers),
                        strict.post("/v1/sweeps", json=SWEEP, headers=headers)):
            assert refused.status_code == 429 and refused.mimetype == "application/problem+json"
            assert 1 <= int(refused.headers["Retry-After"]) <= 60
            assert "submissions" in refused.get_json()["detail"] and "3 per 1 minute" in refused.get_json()["detail"]
        # Reads, cancels and another token are not counted against it.
        assert all(strict.get("/v1/jobs", headers=headers).status_code == 200 for _ in range(20))
        other = {"Authorization": f"Bearer {make_token('submitter-2')}"}
        assert strict.post("/v1/jobs", json=tiny_spec(), headers=other).status_code == 201
        _cancel_all(strict, other)
    finally:
        _cancel_all(strict, headers)


def test_uploads_trip_their_limit_while_reads_and_submits_still_pass(strict: Any, make_token: Any) -> None:
    headers = {"Authorization": f"Bearer {make_token('uploader')}"}
    assert _upload(strict, headers).status_code == 201
    refused = _upload(strict, headers)
    assert refused.status_code == 429 and "uploads" in refused.get_json()["detail"]
    assert strict.get("/v1/datasets", headers=headers).status_code == 200
    assert strict.post("/v1/jobs", json=tiny_spec(), headers=headers).status_code == 201
    _cancel_all(strict, headers)


def test_the_submit_limit_is_checked_before_the_token(strict: Any) -> None:
    # Guessing tokens on the expensive endpoints is throttled by the stricter limit too.
    bad = {"Authorization": "Bearer ty_guess"}
    assert [strict.post("/v1/jobs", json=tiny_spec(), headers=bad).status_code for _ in range(4)] == [401] * 3 + [429]


def test_expensive_limits_are_counted_in_redis_by_every_api_process(settings: Any, make_token: Any) -> None:
    apps = [create_app(replace(settings, rate_limit_uploads="2 per minute")) for _ in range(2)]
    headers = {"Authorization": f"Bearer {make_token('two-uploaders')}"}
    first, second = (app.test_client() for app in apps)
    assert [_upload(c, headers).status_code for c in (first, second)] == [201, 201]
    assert _upload(first, headers).status_code == 429
    for app in apps:
        app.extensions["trainyard_events"].close()


def test_storage_down_lets_expensive_requests_through(settings: Any, make_token: Any) -> None:
    app = create_app(replace(settings, rate_limit_uploads="1 per minute",
                             ratelimit_storage_url="redis://127.0.0.1:1/0"))
    headers = {"Authorization": f"Bearer {make_token('uploader-no-storage')}"}
    assert [_upload(app.test_client(), headers).status_code for _ in range(2)] == [201, 201]
    app.extensions["trainyard_events"].close()


def test_settings_defaults_off_and_refusals(settings: Any) -> None:
    defaults = Settings.from_env({"TRAINYARD_VAR_DIR": "/tmp/x"})
    assert (defaults.rate_limit, defaults.rate_limit_submit, defaults.rate_limit_uploads) == (
        "100000 per minute", "600 per minute", "60 per minute")
    off = Settings.from_env({"TRAINYARD_VAR_DIR": "/tmp/x", "TRAINYARD_RATE_LIMIT": "off",
                             "TRAINYARD_RATE_LIMIT_SUBMIT": "", "TRAINYARD_RATE_LIMIT_UPLOADS": " off "})
    assert (off.rate_limit, off.rate_limit_submit, off.rate_limit_uploads) == ("off", "", "off")
    assert not create_app(replace(settings, rate_limit="off", rate_limit_submit="", rate_limit_uploads="off")) \
        .extensions.get("limiter")
    only_uploads = replace(settings, rate_limit="off", rate_limit_submit="off", rate_limit_uploads="1/minute")
    client = create_app(only_uploads).test_client()
    headers = {"Authorization": "Bearer ty_nobody"}
    assert [_upload(client, headers).status_code for _ in range(2)] == [401, 429]
    assert all(client.get("/v1/jobs", headers=headers).status_code == 401 for _ in range(5))
    for name, field in (("TRAINYARD_RATE_LIMIT_SUBMIT", "rate_limit_submit"),
                        ("TRAINYARD_RATE_LIMIT_UPLOADS", "rate_limit_uploads")):
        with pytest.raises(SettingsError, match=name):
            create_app(replace(settings, **{field: "lots"}))
