"""Schemathesis fuzzes the live app against openapi.yaml: every operation, valid and invalid inputs, with
and without a token, plus stateful sequences that follow the spec's links (submit -> get/cancel/...).

Checks: no 5xx, every status code, content type, header and body conforms to the document, malformed
input is rejected, and no operation that needs a token answers without one. The number of examples per
operation is bounded so the whole file runs in about two minutes: 25 for the operations that take a body,
200 and the coverage phase for the others.
"""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    use_after_free,
)
from schemathesis.generation import GenerationMode

from tests.conftest import ROOT

# A deeper run by hand: TRAINYARD_FUZZ_EXAMPLES=500 pytest tests/service/test_fuzz_api.py
EXAMPLES_PER_OPERATION = int(os.environ.get("TRAINYARD_FUZZ_EXAMPLES", "25"))
# The operations that take a body cost a validation or an upload per example; the others (every GET,
# cancel, delete) cost a query or two, so they get eight times the examples and the coverage phase
# (boundary values of every parameter and header, unexpected methods): where deeper runs found more.
BODY_OPERATIONS = ["submitJob", "patchJob", "submitSweep", "uploadDataset"]
PARAMETER_EXAMPLES = 8 * EXAMPLES_PER_OPERATION
STATEFUL_SCENARIOS, STATEFUL_STEPS = 15, 6
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance, negative_data_rejection, ignored_auth, use_after_free]
# /readyz answers a documented 503 while no worker is up (none is, in this module): not a server error there.
READYZ_CHECKS = [check for check in CHECKS if check is not not_a_server_error]

# Figures for the report: requests per operation and statuses, across the whole module.
CALLS: Counter[str] = Counter()
STATUSES: Counter[int] = Counter()


@pytest.fixture(scope="module")
def fuzz_app(settings: Any) -> Iterator[Any]:
    from dataclasses import replace

    from service import create_app

    # Conformance, not fair use (tests/service/test_rate_limits.py): the stricter submit and upload limits
    # would turn most of a deep run's submits and uploads into 429s.
    app = create_app(replace(settings, rate_limit_submit="off", rate_limit_uploads="off"))
    yield app
    app.extensions["trainyard_events"].close()  # the fuzzed event streams started its listener


@pytest.fixture(scope="module")
def fuzz_headers(make_token: Any, fuzz_app: Any) -> Iterator[dict[str, str]]:
    headers = {"Authorization": f"Bearer {make_token('fuzzer')}"}
    yield headers
    # A valid spec the fuzzer happened to submit must not keep a test worker busy.
    client = fuzz_app.test_client()
    cursor: str | None = None
    while True:
        page = client.get("/v1/jobs?limit=200" + (f"&cursor={cursor}" if cursor else ""), headers=headers).get_json()
        for job in page["jobs"]:
            if job["status"] in ("queued", "running"):
                client.post(f"/v1/jobs/{job['id']}/cancel", headers=headers)
        cursor = page["next_cursor"]
        if not cursor:
            break
    print(f"\nfuzzing: {sum(CALLS.values())} requests over {len(CALLS)} operations; statuses {dict(STATUSES)}")
    for operation, n in sorted(CALLS.items()):
        print(f"  {n:5d}  {operation}")


def _load(examples: int, phases: list[str]) -> Any:
    """The document, loaded from the file (the app needs the session's database, so it is handed to each
    call instead); each load has its own configuration."""
    loaded = schemathesis.openapi.from_path(ROOT / "openapi.yaml")
    # Unknown query parameters are ignored, as most HTTP APIs do (the body, in contrast, refuses unknown
    # fields), so the fuzzer does not invent them.
    loaded.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                                    max_examples=examples, deterministic=True, allow_extra_parameters=False)
    loaded.config.phases.update(phases=phases)
    return loaded


schema = _load(EXAMPLES_PER_OPERATION, ["examples", "fuzzing", "stateful"])
# The coverage phase on the bodies (every boundary value of every field: thousands of requests for the job
# spec alone) is left to a manual `st run`.
bodies = _load(EXAMPLES_PER_OPERATION, ["examples", "fuzzing"]).include(operation_id=BODY_OPERATIONS)
parameters = _load(PARAMETER_EXAMPLES, ["examples", "coverage", "fuzzing"]).exclude(operation_id=BODY_OPERATIONS)


def _conforms(case: Any, fuzz_app: Any, fuzz_headers: dict[str, str]) -> None:
    CALLS[f"{case.method} {case.path}"] += 1
    # The checks that send probes of their own (ignored_auth) take the app from the schema.
    case.operation.schema.app = fuzz_app
    checks = READYZ_CHECKS if case.path == "/readyz" else CHECKS
    response = case.call_and_validate(headers=fuzz_headers, checks=checks, app=fuzz_app)
    STATUSES[response.status_code] += 1


@bodies.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_every_operation_with_a_body_conforms(case: Any, fuzz_app: Any, fuzz_headers: dict[str, str]) -> None:
    _conforms(case, fuzz_app, fuzz_headers)


@parameters.parametrize()
@settings(max_examples=PARAMETER_EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_every_other_operation_conforms(case: Any, fuzz_app: Any, fuzz_headers: dict[str, str]) -> None:
    _conforms(case, fuzz_app, fuzz_headers)


@schema.parametrize()
@settings(max_examples=3, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_bad_or_missing_token_is_always_401(case: Any, fuzz_app: Any) -> None:
    if case.operation.definition.raw.get("security") == []:
        return  # /healthz, /readyz and /openapi.yaml are public by design
    for headers in ({"Authorization": "Bearer ty_not-a-token"}, {"Authorization": "Basic YWxpY2U6c2VjcmV0"}, {}):
        case.headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
        response = case.call(headers=headers, app=fuzz_app)
        CALLS[f"{case.method} {case.path} (bad token)"] += 1
        STATUSES[response.status_code] += 1
        assert response.status_code == 401, (case.method, case.path, headers, response.text[:300])
        assert response.headers.get("content-type", [""])[0].startswith("application/problem+json")


def test_stateful_sequences_follow_the_links(fuzz_app: Any, fuzz_headers: dict[str, str]) -> None:
    """Submit or upload, then use what was created (get, metrics, cancel, delete, ...) in random orders."""
    schema.app = fuzz_app
    base = schema.as_state_machine()

    class Sequences(base):  # type: ignore[misc, valid-type]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"headers": fuzz_headers, "app": fuzz_app}

        def after_call(self, response: Any, case: Any) -> None:
            super().after_call(response, case)
            CALLS[f"{case.method} {case.path} (stateful)"] += 1
            STATUSES[response.status_code] += 1

        def validate_response(self, response: Any, case: Any, additional_checks: Any = None, **kwargs: Any) -> None:
            checks = READYZ_CHECKS if case.path == "/readyz" else CHECKS
            case.validate_response(response, checks=checks, headers=fuzz_headers, transport_kwargs=kwargs,
                                   recorder=self.recorder)

    Sequences.run(settings=settings(max_examples=STATEFUL_SCENARIOS, stateful_step_count=STATEFUL_STEPS,
                                    deadline=None, derandomize=True, suppress_health_check=list(HealthCheck)))
