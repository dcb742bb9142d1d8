from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import unsent_job


@pytest.fixture()
def job_id(app: Any, client: Any, auth: dict[str, str]) -> str:
    """A queued job no worker was ever sent: only this test moves it."""
    return unsent_job(app, client, auth, "fencing")
