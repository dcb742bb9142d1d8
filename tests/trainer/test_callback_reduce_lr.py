import pytest

from workers.trainer import InMemoryReporter, train
from workers.trainer.callbacks import ReduceLROnPlateau, RunState

from .specs import make_spec, optimizer


def _reduce(**overrides):
    return {"monitor": "loss", "factor": 0.5, "patience": 0, "min_delta": 1e9, "cooldown": 0,
            "min_lr": 0.0, **overrides}


def test_plateau_halves_the_rate_and_the_report_shows_the_rate_in_force(tmp_path, classification_data):
    spec = make_spec(optimizer=optimizer("sgd", learning_rate=0.01),
                     callbacks={"reduce_lr_on_plateau": _reduce()}, training={"epochs": 4})
    reporter = InMemoryReporter()
    train(spec, classification_data, reporter, tmp_path)
    # epoch 1 sets the reference; epochs 2 and 3 do not improve by 1e9, so the rate halves after each.
    rates = [logs["learning_rate"] for _, logs in reporter.epochs]
    assert rates == pytest.approx([0.01, 0.01, 0.005, 0.0025])


def test_min_lr_floor(tmp_path, classification_data):
    spec = make_spec(optimizer=optimizer("sgd", learning_rate=0.01),
                     callbacks={"reduce_lr_on_plateau": _reduce(min_lr=0.008)}, training={"epochs": 3})
    reporter = InMemoryReporter()
    train(spec, classification_data, reporter, tmp_path)
    assert [logs["learning_rate"] for _, logs in reporter.epochs] == pytest.approx([0.01, 0.01, 0.008])


def test_refused_together_with_a_schedule(tmp_path, classification_data):
    spec = make_spec(schedule={"type": "exponential_decay", "unit": "epoch", "decay_steps": 1,
                               "decay_rate": 0.5, "staircase": False},
                     callbacks={"reduce_lr_on_plateau": _reduce()})
    reporter = InMemoryReporter()
    with pytest.raises(ValueError, match="constant schedule"):
        train(spec, classification_data, reporter, tmp_path)
    assert reporter.result.stop_reason == "error"


@pytest.mark.parametrize("bad", [{"factor": 1.0}, {"factor": 0.0}, {"patience": -1}, {"cooldown": -1},
                                 {"min_lr": -1.0}, {"monitor": None}])
def test_constructor_arguments_are_validated(bad):
    with pytest.raises(ValueError):
        ReduceLROnPlateau(RunState(), **_reduce(**bad))
