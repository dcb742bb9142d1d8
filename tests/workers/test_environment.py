"""The reproducibility record's parts that the end-to-end test (tests/service/test_training_e2e.py) cannot
vary: a deployment's commit, the determinism of an unseeded job, a GPU request on a CPU-only machine."""
from __future__ import annotations

import pytest

from trainyard.settings import Settings, SettingsError
from workers import environment


def test_the_deployments_commit_is_a_typed_setting() -> None:
    assert Settings.from_env({}).git_commit is None
    assert Settings.from_env({"TRAINYARD_GIT_COMMIT": " ABC123 "}).git_commit == "abc123"
    with pytest.raises(SettingsError, match="TRAINYARD_GIT_COMMIT"):
        Settings.from_env({"TRAINYARD_GIT_COMMIT": "main; rm -rf /"})


def test_the_deployments_commit_wins_over_the_checkout() -> None:
    spec = {"training": {"seed": None}}
    assert environment.for_job(spec, "host:1", "abc123")["trainyard"]["commit"] == "abc123"
    assert environment.for_job(spec, "host:1")["trainyard"]["commit"] == environment._checkout_head()


def test_device_and_determinism_follow_the_job() -> None:
    seeded = environment.for_job({"training": {"seed": 7}}, "host:1")
    assert seeded["determinism"]["seed"] == 7 and seeded["determinism"]["op_determinism"] is True
    # A job asking for a GPU on a machine without one trained on the CPU, and says so.
    on_cpu = environment.for_job({"training": {}, "resources": {"gpus": 1}}, "host:1")
    assert on_cpu["device"]["kind"] == "cpu" and on_cpu["device"]["count"] >= 1
    assert on_cpu["worker"] == {"id": "host:1", "hostname": seeded["worker"]["hostname"]}

