"""The README's walk-through, run as written against the real stack, and its example error checked against
what the API answers: the first page a newcomer reads stays true.

The walk-through's shell block runs in a scratch folder laid out like the repository after `make run`
(`var/dev-token`, `.venv` -> this environment), with only its API address changed to the test API's.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any


from tests.conftest import ROOT, subprocess_env
from trainyard.datasets import load_builtin

README = (ROOT / "README.md").read_text()


def _section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start:end if end != -1 else None]


def _walkthrough_script() -> str:
    block = re.search(r"```sh\n(.*?)```", _section("Walk-through"), re.S)
    assert block, "the walk-through has no sh block"
    return block.group(1)


def _walkthrough_spec() -> dict[str, Any]:
    script = _walkthrough_script()
    body = re.search(r"\$API/v1/jobs -d '(\{.*?\})'", script, re.S)
    assert body, "the walk-through's submit command"
    return json.loads(body.group(1))


def test_walkthrough_runs_as_written(api_url: str, worker: Any, token: str, tmp_path: Path) -> None:
    script = _walkthrough_script()
    assert "API=http://127.0.0.1:8000" in script
    script = script.replace("API=http://127.0.0.1:8000", f"API={api_url}")
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "dev-token").write_text(token + "\n")
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parent.parent)
    env = subprocess_env({"PYTHONPATH": str(ROOT)})
    run = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    # Downloads land in var/, which .gitignore covers.
    assert (tmp_path / "var" / "best.keras").stat().st_size > 0
    assert re.search(r"^var/$", (ROOT / ".gitignore").read_text(), re.M)
    scored = re.search(r"accuracy on (\d+) held-out digits: ([0-9.]+) \(the job says ([0-9.]+)\)", run.stdout)
    assert scored, run.stdout[-3000:]
    rows, mine, the_jobs = int(scored.group(1)), float(scored.group(2)), float(scored.group(3))
    assert rows == len(load_builtin("digits")["y_test"]) == 359  # the fixed 20% of 1,797: never trained on
    assert mine == the_jobs and mine >= 0.9


def test_readme_example_error_is_what_the_api_says(client: Any, auth: dict[str, str]) -> None:
    """The spec section's example answer is the API's answer to the walk-through's job with
    `model.layers[0].units` set to 0."""
    section = _section("The job spec")
    example = re.search(r"For example:\n\n```json\n(.*?)```", section, re.S)
    assert example, "the example error in 'The job spec'"
    spec = _walkthrough_spec()
    spec["model"]["layers"][0]["units"] = 0
    resp = client.post("/v1/jobs", json=spec, headers=auth)
    assert resp.status_code == 422
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    answer = resp.get_json()
    documented = json.loads(example.group(1))
    assert {k: answer[k] for k in documented} == documented


def test_make_run_installs_only_the_service(tmp_path: Path) -> None:
    """`make run` on a fresh clone installs the project without its test extras; `make test` adds them."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    for target, wanted, unwanted in (("run", "-e .", "[test]"), ("test", "-e '.[test]'", None)):
        dry = subprocess.run(["make", "-n", "-C", str(ROOT), f"VENV={tmp_path / 'fresh-venv'}", target],
                             capture_output=True, text=True, env=env, timeout=60)
        assert dry.returncode == 0, dry.stderr
        installs = [line for line in dry.stdout.splitlines() if "pip install" in line and "--upgrade pip" not in line]
        assert any(line.rstrip().endswith(wanted) for line in installs), installs
        if unwanted:
            assert not any(unwanted in line for line in installs), installs
