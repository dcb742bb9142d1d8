"""Schemathesis fuzzes the live app against openapi.yaml: every operation, valid and invalid inputs, with
and without a token, plus stateful sequences that follow the spec's links (submit -> get/cancel/...).

Checks: no 5xx, every status code, content type, header and body conforms to the document, malformed
input is rejected, and no operation that needs a token answers without one. The number of examples per
operation is bounded so the whole file runs in about a minute.
"""
from __future__ import annotations

from collections import Counter
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

EXAMPLES_PER_OPERATION = 25
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance, negative_data_rejection, ignored_auth, use_after_free]

# Figures for the report: requests per operation, across the whole module.
CALLS: Counter[str] = Counter()


@pytest.fixture(scope="module")
def fuzz_app(settings: Any) -> Any:
    from service import create_app

    return create_app(settings)


@pytest.fixture(scope="module")
def fuzz_headers(make_token: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token('fuzzer')}"}


# Loaded from the file (the app needs the session's database, so it is handed to each call instead).
schema = schemathesis.openapi.from_path(ROOT / "openapi.yaml")
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                                max_examples=EXAMPLES_PER_OPERATION, deterministic=True)


@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_every_operation_conforms(case: Any, fuzz_app: Any, fuzz_headers: dict[str, str]) -> None:
    CALLS[f"{case.method} {case.path}"] += 1
    # The checks that send probes of their own (ignored_auth) take the app from the schema.
    case.operation.schema.app = fuzz_app
    case.call_and_validate(headers=fuzz_headers, checks=CHECKS, app=fuzz_app)
