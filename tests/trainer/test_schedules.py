import math

import keras
import numpy as np
import pytest

from workers.trainer import InMemoryReporter, train
from workers.trainer.schedules import build_schedule

from .specs import make_spec

LR0 = 0.1
EPOCHS = 3
STEPS = 4  # 64 rows / batch 16


def _lr_per_epoch(schedule, tmp_path, classification_data):
    spec = make_spec(classification_data, optimizer={"type": "sgd", "learning_rate": LR0}, schedule=schedule,
                     training={"epochs": EPOCHS, "batch_size": 16})
    reporter = InMemoryReporter()
    train(spec, classification_data, reporter, tmp_path)
    assert [epoch for epoch, _ in reporter.epochs] == [1, 2, 3]
    return [logs["learning_rate"] for _, logs in reporter.epochs]


def _cosine(step, decay, alpha=0.0, lr=LR0):
    step = min(step, decay)
    return lr * ((1 - alpha) * 0.5 * (1 + math.cos(math.pi * step / decay)) + alpha)


# Expected rate at each epoch's first step, computed by hand (e counts from 1).
CASES = {
    "constant": ({"type": "constant"}, [LR0] * 3),
    "exponential_epoch": (
        {"type": "exponential_decay", "unit": "epoch", "decay_steps": 1, "decay_rate": 0.5,
         "staircase": False},
        [LR0 * 0.5 ** (e - 1) for e in (1, 2, 3)]),
    "exponential_step": (
        {"type": "exponential_decay", "unit": "step", "decay_steps": 8, "decay_rate": 0.5,
         "staircase": True},
        [LR0 * 0.5 ** math.floor((e - 1) * STEPS / 8) for e in (1, 2, 3)]),
    "inverse_time": (
        {"type": "inverse_time_decay", "unit": "epoch", "decay_steps": 1, "decay_rate": 1.0,
         "staircase": False},
        [LR0 / (1 + 1.0 * (e - 1)) for e in (1, 2, 3)]),
    "piecewise_constant": (
        {"type": "piecewise_constant", "unit": "epoch", "boundaries": [1, 2],
         "values": [0.2, 0.05, 0.01]},
        [0.2, 0.05, 0.01]),
    "cosine": (
        {"type": "cosine_decay", "unit": "epoch", "decay_steps": 2, "alpha": 0.1, "warmup_steps": 0,
         "warmup_target": None},
        [_cosine(e - 1, 2, alpha=0.1) for e in (1, 2, 3)]),
    "cosine_warmup": (
        {"type": "cosine_decay", "unit": "epoch", "decay_steps": 2, "alpha": 0.0, "warmup_steps": 1,
         "warmup_target": 0.3},
        # warm-up from the base rate to the target over epoch 1, then decay from the target
        [LR0, _cosine(0, 2, lr=0.3), _cosine(1, 2, lr=0.3)]),
    "polynomial": (
        {"type": "polynomial_decay", "unit": "epoch", "decay_steps": 2, "end_learning_rate": 0.01,
         "power": 2.0, "cycle": False},
        [(LR0 - 0.01) * (1 - min(e - 1, 2) / 2) ** 2 + 0.01 for e in (1, 2, 3)]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_reported_learning_rate_follows_the_schedule(case, tmp_path, classification_data):
    schedule, expected = CASES[case]
    assert _lr_per_epoch(schedule, tmp_path, classification_data) == pytest.approx(expected, rel=1e-5)


def test_piecewise_boundaries_in_epochs_switch_exactly_at_the_epoch_boundary():
    sched = build_schedule({"type": "piecewise_constant", "unit": "epoch", "boundaries": [2],
                            "values": [1.0, 0.5]}, 0.1, steps_per_epoch=10)
    # steps 0..19 are epochs 1-2, step 20 is the first step of epoch 3
    assert float(sched(19)) == 1.0
    assert float(sched(20)) == 0.5


def test_cosine_warmup_without_target_holds_the_base_rate():
    sched = build_schedule({"type": "cosine_decay", "unit": "step", "decay_steps": 10, "alpha": 0.0,
                            "warmup_steps": 5, "warmup_target": None}, 0.1, steps_per_epoch=3)
    assert [float(sched(s)) for s in (0, 4, 5)] == pytest.approx([0.1, 0.1, 0.1])
    assert float(sched(15)) == pytest.approx(0.0, abs=1e-7)


def test_checkpoint_with_a_schedule_loads_without_custom_objects(tmp_path, classification_data):
    spec = make_spec(classification_data, schedule={"type": "exponential_decay", "unit": "epoch", "decay_steps": 1,
                               "decay_rate": 0.9, "staircase": False},
                     training={"epochs": 2})
    result = train(spec, classification_data, InMemoryReporter(), tmp_path)
    loaded = keras.models.load_model(result.best_checkpoint)
    schedule = loaded.optimizer._learning_rate
    assert isinstance(schedule, keras.optimizers.schedules.ExponentialDecay)
    assert schedule.decay_steps == STEPS  # one epoch in steps, from the real steps_per_epoch
    assert np.isfinite(loaded.predict(classification_data.x_train[:4], verbose=0)).all()


def test_unknown_schedule_and_unit_are_refused():
    with pytest.raises(ValueError, match="unknown schedule"):
        build_schedule({"type": "cyclic", "unit": "epoch"}, 0.1, 4)
    with pytest.raises(ValueError, match="unit"):
        build_schedule({"type": "exponential_decay", "unit": "batch", "decay_steps": 1,
                        "decay_rate": 0.5}, 0.1, 4)
