"""With the database unreachable, the API answers 503 problem+json with Retry-After, never a 500."""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from tests.conftest import free_port


def test_unreachable_database_is_a_503_problem_not_a_500(settings: Any) -> None:
    from service import create_app

    # A port nobody listens on: every query fails to connect, as during a Postgres restart.
    down = replace(settings, database_url=f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nowhere")
    client = create_app(down).test_client()
    for method, path in (("GET", "/v1/jobs"), ("GET", "/v1/jobs/job_" + "0" * 32), ("POST", "/v1/jobs")):
        resp = client.open(path, method=method, json={} if method == "POST" else None,
                           headers={"Authorization": "Bearer ty_" + "x" * 40})
        assert resp.status_code == 503, (method, path, resp.status_code, resp.get_data(as_text=True))
        assert resp.mimetype == "application/problem+json"
        assert resp.headers["Retry-After"] == "5"
        body = resp.get_json()
        assert body["status"] == 503 and "database" in body["detail"]
