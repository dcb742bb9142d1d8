import pytest

from trainyard.spec import SpecError
from workers.trainer import InMemoryReporter, train
from workers.trainer.callbacks import ReduceLROnPlateau, RunState

from .specs import make_spec


def _reduce(**overrides):
    return {"monitor": "loss", "factor": 0.5, "patience": 0, "min_delta": 1e9, "cooldown": 0,
            "min_lr": 0.0, **overrides}


def test_plateau_halves_the_rate_and_the_report_shows_the_rate_in_force(tmp_path, classification_data):
    spec = make_spec(classification_data, optimizer={"type": "sgd", "learning_rate": 0.01},
                     callbacks={"reduce_lr_on_plateau": _reduce()}, training={"epochs": 4})
    reporter = InMemoryReporter()
    train(spec, classification_data, reporter, tmp_path)
    # epoch 1 sets the reference; epochs 2 and 3 do not improve by 1e9, so the rate halves after each.
    rates = [logs["learning_rate"] for _, logs in reporter.epochs]
    assert rates == pytest.approx([0.01, 0.01, 0.005, 0.0025])


def test_min_lr_floor(tmp_path, classification_data):
    spec = make_spec(classification_data, optimizer={"type": "sgd", "learning_rate": 0.01},
                     callbacks={"reduce_lr_on_plateau": _reduce(min_lr=0.008)}, training={"epochs": 3})
    reporter = InMemoryReporter()
    train(spec, classification_data, reporter, tmp_path)
    assert [logs["learning_rate"] for _, logs in reporter.epochs] == pytest.approx([0.01, 0.01, 0.008])


@pytest.mark.parametrize("mode, reduced", [("min", False), ("max", True)])
def test_the_resolved_mode_is_honoured(tmp_path, classification_data, mode, reduced):
    # The loss falls every epoch: an improvement in mode min, none in mode max, where patience 0 then
    # halves the rate after epoch 2. (Keras' "auto" would call the loss "min" in both cases.)
    spec = make_spec(classification_data, optimizer={"type": "sgd", "learning_rate": 0.1},
                     callbacks={"reduce_lr_on_plateau": _reduce(min_delta=0.0, mode=mode)}, training={"epochs": 3})
    assert spec["callbacks"]["reduce_lr_on_plateau"]["mode"] == mode
    reporter = InMemoryReporter()
    assert train(spec, classification_data, reporter, tmp_path).stop_reason == "completed"
    losses = [logs["loss"] for _, logs in reporter.epochs]
    assert losses == sorted(losses, reverse=True), "the premise: the loss falls every epoch"
    rates = [logs["learning_rate"] for _, logs in reporter.epochs]
    assert rates == pytest.approx([0.1, 0.1, 0.05] if reduced else [0.1, 0.1, 0.1])


def test_auto_mode_is_resolved_by_the_contract(classification_data):
    spec = make_spec(classification_data, metrics=["accuracy"],
                     callbacks={"reduce_lr_on_plateau": {"monitor": "accuracy"}})
    assert spec["callbacks"]["reduce_lr_on_plateau"]["mode"] == "max"


def test_refused_together_with_a_schedule(tmp_path, classification_data):
    schedule = {"type": "exponential_decay", "unit": "epoch", "decay_steps": 1, "decay_rate": 0.5}
    with pytest.raises(SpecError) as refused:
        make_spec(classification_data, schedule=schedule, callbacks={"reduce_lr_on_plateau": _reduce()})
    assert [e["field"] for e in refused.value.errors] == ["callbacks.reduce_lr_on_plateau"]
    # The engine refuses the pair too, should a spec ever reach it without validation: two valid specs'
    # sections put together, deliberately not something the contract produces.
    spec = make_spec(classification_data, schedule=schedule)
    spec["callbacks"]["reduce_lr_on_plateau"] = make_spec(
        classification_data, callbacks={"reduce_lr_on_plateau": _reduce()})["callbacks"]["reduce_lr_on_plateau"]
    reporter = InMemoryReporter()
    with pytest.raises(ValueError, match="constant schedule"):
        train(spec, classification_data, reporter, tmp_path)
    assert reporter.result.stop_reason == "error"


@pytest.mark.parametrize("bad", [{"factor": 1.0}, {"factor": 0.0}, {"patience": -1}, {"cooldown": -1},
                                 {"min_lr": -1.0}, {"monitor": None},
                                 {"mode": "lowest"}])
def test_constructor_arguments_are_validated(bad):
    with pytest.raises(ValueError):
        ReduceLROnPlateau(RunState(), **_reduce(**bad))
