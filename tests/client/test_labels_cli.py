"""Labels from the command line and the Python client, against the live API: `trainyard label JOB k=v k2-
--name N`, `trainyard list --label --name --sort`, `Trainyard.patch` and `Trainyard.list_jobs` filters."""
from __future__ import annotations

import json
from typing import Any

import pytest

from client import PreconditionFailed, Trainyard, ValidationError
from client.api import label_filters
from tests.client.conftest import RunCli
from tests.conftest import tiny_spec


@pytest.fixture()
def own(api_url: str, make_token: Any, request: pytest.FixtureRequest) -> tuple[Trainyard, dict[str, str]]:
    """A client and CLI environment of a tenant of this test alone: its lists hold only its own jobs."""
    token = make_token(f"labels-cli-{request.node.name}")
    return Trainyard(api_url, token, timeout=10), {"TRAINYARD_TOKEN": token}


def test_label_command_sets_removes_and_renames(run_cli: RunCli, own: tuple[Trainyard, dict[str, str]]) -> None:
    ty, env = own
    job = ty.submit(tiny_spec(name="before", labels={"team": "vision", "stage": "draft"}))
    ty.cancel(job["id"])  # any status can be labelled
    result = run_cli("label", job["id"], "owner=ana", "stage-", "team=nlp", "--name", "after", env=env)
    assert result.exit_code == 0, result.output
    lines = dict(line.split(None, 1) for line in result.stdout.splitlines() if line.strip())
    assert lines["name"] == "after" and lines["labels"] == "team=nlp,owner=ana"
    after = ty.get(job["id"])
    assert after["labels"] == {"team": "nlp", "owner": "ana"} and after["name"] == "after"

    as_json = json.loads(run_cli("label", job["id"], "note=a=b", "--json", env=env).stdout)
    assert as_json["labels"]["note"] == "a=b"  # the value is everything after the first '='
    cleared = run_cli("label", job["id"], "--name", "", env=env)
    assert cleared.exit_code == 0 and ty.get(job["id"])["name"] is None

    bad = run_cli("label", job["id"], "team", env=env)
    assert bad.exit_code == 2 and "key=value" in bad.output
    assert run_cli("label", job["id"], env=env).exit_code == 2
    refused = run_cli("label", job["id"], "Team=x", env=env)
    assert refused.exit_code == 3 and "labels.Team:" in refused.stderr


def test_list_filters_and_sorts_from_the_command_line(run_cli: RunCli, own: tuple[Trainyard, dict[str, str]]) -> None:
    ty, env = own
    jobs = [ty.submit(tiny_spec(name=name, labels=labels)) for name, labels in [
        ("mnist-a", {"team": "vision"}), ("cifar-b", {"team": "vision", "baseline": ""}),
        ("mnist-c", {"team": "nlp"})]]
    for job in jobs:
        ty.cancel(job["id"])
    ids = [job["id"] for job in jobs]

    def listed(*args: str) -> list[str]:
        result = run_cli("list", *args, env=env)
        assert result.exit_code == 0, result.output
        return [line.split()[0] for line in result.stdout.splitlines()[1:]]

    assert listed("--label", "team:vision") == [ids[1], ids[0]]
    assert listed("--label", "team:vision", "--label", "baseline") == [ids[1]]
    assert listed("--name", "MNIST") == [ids[2], ids[0]]
    assert listed("--label", "team:robotics") == []  # "no jobs" is not a row
    table = run_cli("list", "--label", "baseline", env=env).stdout.splitlines()
    assert table[0].split()[-1] == "LABELS" and table[1].split()[-1] == "team=vision,baseline="
    assert set(listed("--sort", "-best_value")) == set(ids)  # none has a value yet: all last, by id
    assert run_cli("list", "--sort", "loss", env=env).exit_code == 2
    refused = run_cli("list", "--label", "Team:x", env=env)
    assert refused.exit_code == 3 and "query.label" in refused.stderr


def test_python_client_patch_and_filters(own: tuple[Trainyard, dict[str, str]]) -> None:
    ty, _ = own
    job = ty.submit(tiny_spec(name="py", labels={"team": "vision"}))
    ty.cancel(job["id"])
    assert ty.patch(job["id"], labels={"team": None, "stage": "final"})["labels"] == {"stage": "final"}
    assert ty.patch(job["id"], name="renamed")["name"] == "renamed"
    assert [j["id"] for j in ty.iter_jobs(labels={"stage": None}, name="NAME", page_size=1)] == [job["id"]]
    assert ty.patch(job["id"], name=None)["name"] is None
    assert list(ty.iter_jobs(name="NAME")) == []
    assert [j["id"] for j in ty.list_jobs(labels={"stage": "final"})["jobs"]] == [job["id"]]
    assert [j["id"] for j in ty.list_jobs(labels=["stage"], sort="best_value")["jobs"]] == [job["id"]]
    assert list(ty.iter_jobs(labels={"stage": "draft"})) == []
    etag = ty.request("GET", f"/v1/jobs/{job['id']}").headers["ETag"]
    ty.patch(job["id"], labels={"x": "1"}, if_match=etag)
    with pytest.raises(PreconditionFailed):
        ty.patch(job["id"], labels={"x": "2"}, if_match=etag)
    with pytest.raises(ValidationError) as exc:
        ty.patch(job["id"], labels={"Bad": "x"})
    assert [e["field"] for e in exc.value.errors] == ["labels.Bad"]


def test_label_filters_take_a_mapping_or_the_api_form() -> None:
    assert label_filters({"team": "vision", "baseline": None}) == ["team:vision", "baseline"]
    assert label_filters(["team:vision", "baseline"]) == ["team:vision", "baseline"]
    assert label_filters("team:vision") == ["team:vision"]
