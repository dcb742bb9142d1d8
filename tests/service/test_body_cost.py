"""The worst bodies under the 1 MiB cap we know of get their answer from the API: problem+json with a short
error list naming the field, or 201 for the costliest valid ones.

Tests check what bounds the work, not its time: a capped list is refused by its length with one error
(none for its items), an answer lists at most 50 errors, a sweep's trials load each distinct layer once
(tests/sweeps/test_sweep_cost.py). `bench/spec_cost.py` times the same bodies.
"""
from __future__ import annotations

from typing import Any

import pytest

from trainyard.spec.errors import MAX_ERRORS
from tests.worst_bodies import BODIES, Body, encode


@pytest.mark.parametrize("body", BODIES, ids=[b.name for b in BODIES])
def test_the_worst_bodies_are_answered_with_field_paths(client: Any, auth: dict[str, str], body: Body) -> None:
    resp = client.post(body.path, data=encode(body), headers={**auth, "Content-Type": "application/json"})
    answer = resp.get_json()
    assert resp.status_code == body.status, answer
    if body.status == 201:
        return
    assert resp.mimetype == "application/problem+json" and answer["status"] == body.status
    if body.status == 422:
        errors = answer["errors"]
        assert 1 <= len(errors) <= MAX_ERRORS + 1
        assert all(len(e["field"]) <= 200 and len(e["message"]) <= 1000 for e in errors), errors[:3]
        if body.field is not None:
            assert errors[0]["field"] == body.field, errors[:3]
    # The answer stays small whatever the body held.
    assert len(resp.get_data()) < 16_384
