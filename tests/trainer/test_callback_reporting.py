import math

import pytest

from workers.trainer import InMemoryReporter, train
from workers.trainer.callbacks import EpochReporter, RunState

from .specs import make_spec


def test_rows_count_from_one_with_all_metrics_lr_and_seconds(tmp_path, classification_data):
    spec = make_spec(classification_data, dataset={"validation_split": 0.25}, metrics=["accuracy"],
                     training={"epochs": 2})
    reporter = InMemoryReporter()
    train(spec, classification_data, reporter, tmp_path)
    assert [epoch for epoch, _ in reporter.epochs] == [1, 2]
    for _, logs in reporter.epochs:
        assert set(logs) == {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate", "seconds"}
        assert all(type(v) is float and math.isfinite(v) for v in logs.values())
        assert logs["learning_rate"] == pytest.approx(0.001)
        assert 0 < logs["seconds"] < 60


class _FlakySink(InMemoryReporter):
    """epoch_end and checkpoint_saved fail ``failures`` times each before succeeding."""

    def __init__(self, failures):
        super().__init__()
        self.failures = failures
        self.attempts = {"epoch_end": 0, "checkpoint_saved": 0}

    def epoch_end(self, epoch, logs):
        self.attempts["epoch_end"] += 1
        if self.attempts["epoch_end"] <= self.failures:
            raise ConnectionError("database briefly down")
        super().epoch_end(epoch, logs)

    def checkpoint_saved(self, *args):
        self.attempts["checkpoint_saved"] += 1
        if self.attempts["checkpoint_saved"] <= self.failures:
            raise ConnectionError("store briefly down")
        super().checkpoint_saved(*args)


def test_the_trainer_calls_the_reporter_once_per_event_and_goes_on_when_it_fails(tmp_path, classification_data):
    # Retrying a write is the reporter's business (tests/workers/test_reporter_retry.py): the trainer
    # calls each method once, so a reporter that fails once loses that one report, and training goes on.
    reporter = _FlakySink(failures=1)
    result = train(make_spec(classification_data, training={"epochs": 2}), classification_data, reporter, tmp_path)
    assert result.stop_reason == "completed" and result.epochs_run == 2
    assert reporter.attempts["epoch_end"] == 2
    assert [epoch for epoch, _ in reporter.epochs] == [2]
    assert reporter.attempts["checkpoint_saved"] == len(reporter.checkpoints) + 1


def test_a_sink_that_stays_down_does_not_crash_training(tmp_path, classification_data):
    reporter = _FlakySink(failures=10**6)
    result = train(make_spec(classification_data, training={"epochs": 2}), classification_data, reporter, tmp_path)
    assert result.stop_reason == "completed" and result.epochs_run == 2
    assert reporter.epochs == [] and reporter.attempts["epoch_end"] == 2
    assert result.best_checkpoint is not None


def test_constructor_arguments_are_validated():
    with pytest.raises(TypeError):
        EpochReporter(object(), RunState())
    with pytest.raises(TypeError):
        EpochReporter(InMemoryReporter(), None)
