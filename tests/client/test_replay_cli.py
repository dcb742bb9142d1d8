"""`trainyard replay JOB --wait` and `trainyard compare A B`, through the real API and worker: the shared
4-epoch iris job (trained just before) replayed reproduces exactly, and the comparison prints the diffs and a per-epoch table;
and the rendering of a comparison that differs."""
from __future__ import annotations

from typing import Any

import pytest

from client import Trainyard
from client.render import comparison_text, reproduction_text
from tests.client.conftest import RunCli, iris_spec
from tests.client.test_cli import summary


@pytest.fixture()
def done_job(ty: Trainyard, worker: Any) -> dict[str, Any]:
    """A 4-epoch iris job trained by the worker that will train its replay (the session's job may have been
    trained by an earlier process of the session worker, which a replay's environment would name)."""
    return ty.wait(ty.submit(iris_spec())["id"], poll=0.2)


def test_replay_waits_and_shows_the_reproduction_then_compare_prints_the_table(
        run_cli: RunCli, ty: Trainyard, done_job: dict[str, Any]) -> None:
    result = run_cli("replay", done_job["id"], "--wait", "--poll", "0.2")
    assert result.exit_code == 0, result.output
    first = result.stdout.splitlines()[0]
    assert first.startswith(f"replaying {done_job['id']} -> job_"), result.output
    replay_id = first.split()[3]
    shown = summary(result.stdout)
    assert shown["replay of"] == done_job["id"]
    assert shown["reproduction"] == "identical: every epoch's metrics match"
    assert ty.get(replay_id)["reproduction"]["identical"] is True

    compared = run_cli("compare", done_job["id"], replay_id)
    assert compared.exit_code == 0, compared.output
    out = compared.stdout
    assert "spec: no differences" in out and "environment: no differences" in out
    assert f"{done_job['id'][:12]} and {replay_id[:12]} (seed 1): identical at every epoch" in out
    header = next(line for line in out.splitlines() if line.startswith("epoch"))
    assert header.split()[:5] == ["epoch", "loss[1]", "loss[2]", "val_loss[1]", "val_loss[2]"]
    rows = [line.split() for line in out.splitlines()[out.splitlines().index(header) + 1:]]
    assert [r[0] for r in rows] == ["1", "2", "3", "4"]
    assert all(r[1] == r[2] for r in rows)  # the two runs' losses, side by side


def test_compare_needs_two_to_eight_ids_and_replay_refuses_a_job_of_nobody(run_cli: RunCli) -> None:
    assert run_cli("compare", "job_" + "0" * 32).exit_code == 2
    missing = run_cli("replay", "job_" + "0" * 32)
    assert missing.exit_code == 3 and "(404)" in missing.stderr, missing.output


def test_a_comparison_that_differs_shows_each_field_and_where_the_runs_part() -> None:
    a, b = "job_" + "a" * 32, "job_" + "b" * 32
    body = {
        "jobs": [{"id": a, "name": "lr-high", "status": "succeeded", "seed": 1, "epochs_run": 2, "replay_of": None,
                  "best": {"monitor": "val_loss", "value": 0.5, "epoch": 2}, "links": {"self": f"/v1/jobs/{a}"}},
                 {"id": b, "name": "lr-low", "status": "succeeded", "seed": 1, "epochs_run": 2, "replay_of": None,
                  "best": {"monitor": "val_loss", "value": 0.7, "epoch": 2}, "links": {"self": f"/v1/jobs/{b}"}}],
        "spec_diff": {"name": ["lr-high", "lr-low"], "optimizer.learning_rate": [0.01, 0.001]},
        "environment_diff": {"keras": ["3.6.0", "3.7.0"]},
        "metrics": ["loss", "learning_rate"],
        "epochs": [{"epoch": 1, "values": {"loss": [1.0, 1.2], "learning_rate": [0.01, 0.001]}},
                   {"epoch": 2, "values": {"loss": [0.5, None], "learning_rate": [0.01, None]}}],
        "pairs": [{"ids": [a, b], "seed": 1, "identical": False, "first_divergent_epoch": 1,
                   "max_abs_diff": {"loss": 0.2, "learning_rate": 0.009}}],
    }
    text = comparison_text(body)
    lines = text.splitlines()
    spec_row = next(line for line in lines if line.startswith("optimizer.learning_rate"))
    assert spec_row.split() == ["optimizer.learning_rate", "0.01", "0.001"]
    assert next(line for line in lines if line.startswith("keras")).split() == ["keras", "3.6.0", "3.7.0"]
    assert "job_aaaaaaaa and job_bbbbbbbb (seed 1): first differ at epoch 1" in text
    assert lines[-1].split() == ["2", "0.5000", "-", "1.00e-02", "-"]
    assert reproduction_text({"identical": False, "first_divergent_epoch": 3, "max_abs_diff": {"loss": 1.5e-7,
                                                                                               "accuracy": 0.0},
                              "environment_diff": {"keras": ["3.6.0", "3.7.0"]}}) == \
        "diverged at epoch 3 (max |diff| loss 1.500e-07); environment: keras 3.6.0 -> 3.7.0"
