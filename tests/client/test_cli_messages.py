"""What the CLI prints when the API refuses a request (issue 19): each field error once, with the API's
"did you mean", and a 401 that says where the token came from, or where the CLI looked for one."""
from __future__ import annotations

from pathlib import Path

import pytest

from trainyard.spec import SpecError, validate_spec
from tests.client.conftest import RunCli, iris_spec, write_spec


def test_each_field_error_is_printed_once_with_its_hint(run_cli: RunCli, tmp_path: Path) -> None:
    spec = iris_spec(epochs=3, optimizer="adam")
    spec["model"]["layers"][0]["type"] = "Dense"
    result = run_cli("submit", str(write_spec(tmp_path, spec)))
    assert result.exit_code == 3 and result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0] == "error: Validation failed (422): The job spec is not valid:"
    with pytest.raises(SpecError) as refused:
        validate_spec(spec)
    assert lines[1:] == [f"  {e['field']}: {e['message']}" for e in refused.value.errors]
    assert {line.split(":")[0].strip() for line in lines[1:]} == {"model.layers[0].type", "optimizer", "epochs"}
    assert result.stderr.count("Did you mean") == 3, result.stderr


def test_no_token_says_where_it_looked_and_how_to_get_one(
    run_cli: RunCli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no ./var/dev-token here
    result = run_cli("list", env={"TRAINYARD_TOKEN": None})
    assert result.exit_code == 3
    lines = result.stderr.splitlines()
    assert lines[0] == "error: No API token (the server answered Unauthorized (401))."
    assert lines[1] == f"  looked at: --token, TRAINYARD_TOKEN, ./var/dev-token ({tmp_path / 'var' / 'dev-token'}: not found)"
    assert "`make run` prints one" in lines[2] and "flask --app service tokens create --tenant" in lines[2]


@pytest.mark.parametrize("where", ["--token", "TRAINYARD_TOKEN", "./var/dev-token"])
def test_a_refused_token_says_where_it_came_from(
    run_cli: RunCli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    monkeypatch.chdir(tmp_path)
    bad = "ty_not_a_real_token"
    if where == "--token":
        result = run_cli("--token", bad, "list", env={"TRAINYARD_TOKEN": None})
        source = "--token"
    elif where == "TRAINYARD_TOKEN":
        result = run_cli("list", env={"TRAINYARD_TOKEN": bad})
        source = "TRAINYARD_TOKEN"
    else:
        (tmp_path / "var").mkdir()
        (tmp_path / "var" / "dev-token").write_text(bad + "\n")
        result = run_cli("list", env={"TRAINYARD_TOKEN": None})
        source = str(tmp_path / "var" / "dev-token")
    assert result.exit_code == 3
    lines = result.stderr.splitlines()
    assert lines[0].startswith("error: Unauthorized (401): This token is not valid")
    assert lines[1].startswith(f"  the token came from {source}; get a valid one: `make run` prints one")
