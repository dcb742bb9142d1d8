"""A module's own `client` and `api`, module-scoped, for modules whose module-scoped fixtures submit their
jobs once for all their tests (a function-scoped client could not be used there). A module takes them with
`from tests.service.module_api import module_api, module_client  # noqa: F401`: the fixtures' names are
`client` and `api`, so they replace the suite-wide ones in that module only."""
from __future__ import annotations

from typing import Any

import pytest

from tests.service.test_openapi import Api, load_openapi


@pytest.fixture(scope="module", name="client")
def module_client(app: Any) -> Any:
    return app.test_client()


@pytest.fixture(scope="module", name="api")
def module_api(client: Any, auth: dict[str, str]) -> Api:
    return Api(client, load_openapi(), auth)
