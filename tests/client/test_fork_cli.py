"""`trainyard fork`: the tiny-learning-rate job forked with its findings applied and --set, through the real
API and worker; and the parsing of --set and --from."""
from __future__ import annotations

from typing import Any

import click
import pytest

from client import Trainyard
from client.cli import parse_from, parse_settings
from tests.client.conftest import RunCli
from tests.client.test_cli import summary

TINY_RATE = {
    "name": "tiny-rate",
    "dataset": {"id": "builtin:digits", "validation_split": 0.2, "normalize": "standardize"},
    "model": {"input_shape": [64], "layers": [{"type": "dense", "units": 16, "activation": "relu"},
                                             {"type": "dense", "units": 10, "activation": "softmax"}]},
    "loss": "sparse_categorical_crossentropy",
    "metrics": ["accuracy"],
    "optimizer": {"type": "sgd", "learning_rate": 1e-10},
    "training": {"epochs": 20, "batch_size": 32, "seed": 0},
}


def test_set_builds_one_merge_patch() -> None:
    patch = parse_settings(("optimizer.learning_rate=0.01", "optimizer.type=adam", "training.seed=null",
                            "metrics=[\"accuracy\"]", "name=fixed run"))
    assert patch == {"optimizer": {"learning_rate": 0.01, "type": "adam"}, "training": {"seed": None},
                     "metrics": ["accuracy"], "name": "fixed run"}


@pytest.mark.parametrize("bad", [("optimizer.learning_rate",), ("=1",), ("model.layers[0].units=3",),
                                 ("optimizer=1", "optimizer.learning_rate=0.1"),
                                 ("optimizer.learning_rate=0.1", "optimizer=1")])
def test_set_refuses_what_is_not_one_field_per_value(bad: tuple[str, ...]) -> None:
    with pytest.raises(click.BadParameter):
        parse_settings(bad)


def test_from_takes_a_source_or_an_epoch() -> None:
    assert [parse_from(v) for v in ("scratch", "best", "last", "3")] == ["scratch", "best", "last", 3]
    for bad in ("0", "-1", "worst", "1.5"):
        with pytest.raises(click.BadParameter):
            parse_from(bad)


@pytest.fixture(scope="module")
def stopped(ty: Trainyard, worker: Any) -> dict[str, Any]:
    return ty.wait(ty.submit(TINY_RATE)["id"], poll=0.2)


def test_fork_applies_every_suggested_change_and_waits_for_the_child(run_cli: RunCli, ty: Trainyard,
                                                                    stopped: dict[str, Any]) -> None:
    assert stopped["stop_reason"] == "diagnosis"
    result = run_cli("fork", stopped["id"], "--apply-findings", "--set", "training.epochs=6", "--wait",
                     "--poll", "0.2")
    assert result.exit_code == 0, result.output
    first = result.stdout.splitlines()[0]
    assert first.startswith(f"forked {stopped['id']} -> job_") and "lr_too_small:-" in first
    child = ty.get(first.split()[3])
    suggested = {f["id"]: f for f in ty.diagnostics(stopped["id"])["findings"]}["lr_too_small:-"]
    assert child["status"] == "succeeded" and child["progress"]["epoch"] == 6
    assert child["spec"]["optimizer"]["learning_rate"] == suggested["suggested_change"]["optimizer"]["learning_rate"]
    assert child["parent"]["patch"]["training"] == {"epochs": 6}
    assert "lr_too_small:-" in child["parent"]["applied_findings"]
    assert summary(result.stdout)["forked from"].startswith(f"{stopped['id']} (from scratch; ")
    assert child["id"] in summary(run_cli("status", stopped["id"]).stdout)["forks"]
    assert f"resolved by fork {child['id']}" in run_cli("diagnostics", stopped["id"]).stdout


def test_fork_errors_print_the_field_and_exit_3(run_cli: RunCli, stopped: dict[str, Any]) -> None:
    refused = run_cli("fork", stopped["id"], "--set", "optimizer.learning_rate=100")
    assert refused.exit_code == 3 and "patch.optimizer.learning_rate" in refused.stderr, refused.output
    missing = run_cli("fork", stopped["id"], "--from", "19")
    assert missing.exit_code == 3 and "(409)" in missing.stderr and "epoch 19" in missing.stderr
    unknown = run_cli("fork", stopped["id"], "--apply-findings", "nope:-")
    assert unknown.exit_code == 3 and "apply_findings[0]" in unknown.stderr
    assert run_cli("fork", stopped["id"], "--from", "worst").exit_code == 2
