"""The token commands, run as a user runs them: `flask --app service tokens ...`."""
from __future__ import annotations

import subprocess
import sys
from typing import Any

from tests.conftest import ROOT, wait_until


def _flask(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "flask", "--app", "service", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_create_list_use_and_revoke_a_token(service_env: dict[str, str], client: Any) -> None:
    created = _flask(service_env, "tokens", "create", "--tenant", "cli-tenant", "--quiet")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("ty_")
    assert client.get("/v1/jobs", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    listed = _flask(service_env, "tokens", "list", "--tenant", "cli-tenant")
    assert token not in listed.stdout  # never shown again, only its prefix
    token_id = listed.stdout.split()[0]
    assert token_id.startswith("tok_") and token[:10] in listed.stdout
    assert _flask(service_env, "tokens", "check", token).returncode == 0
    assert _flask(service_env, "tokens", "revoke", token_id).returncode == 0
    assert _flask(service_env, "tokens", "check", token).returncode != 0
    # The API process may trust its cached check for TRAINYARD_TOKEN_CACHE_SECONDS (1 s in tests).
    wait_until(lambda: client.get("/v1/jobs", headers={"Authorization": f"Bearer {token}"}).status_code == 401,
               5, 0.1, "the revoked token's 401")
