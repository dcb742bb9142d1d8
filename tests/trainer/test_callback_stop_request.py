import time

import pytest

from workers.trainer import InMemoryReporter, train
from workers.trainer.callbacks import RunState, StopRequest

from .specs import make_spec

# 64 rows, batch 16 -> 4 steps per epoch
SPEC = dict(training={"epochs": 3, "batch_size": 16})


def test_cancel_mid_epoch_stops_at_that_batch_and_drops_the_partial_epoch(tmp_path, classification_data):
    reporter = InMemoryReporter(stop_after_batches=6)  # batch 2 of epoch 2
    result = train(make_spec(classification_data, **SPEC), classification_data, reporter, tmp_path)
    assert result.stop_reason == "cancelled"
    assert reporter.should_stop_calls == 6, "training ran past the requested batch"
    assert [epoch for epoch, _ in reporter.epochs] == [1]
    assert [c["epoch"] for c in reporter.checkpoints] == [1]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["epoch-0001.keras"]
    assert result.epochs_run == 1
    assert result.best_epoch == 1
    assert reporter.result == result


def test_cancel_on_the_last_batch_keeps_the_complete_epoch(tmp_path, classification_data):
    reporter = InMemoryReporter(stop_after_batches=4)
    result = train(make_spec(classification_data, **SPEC), classification_data, reporter, tmp_path)
    assert result.stop_reason == "cancelled"
    assert [epoch for epoch, _ in reporter.epochs] == [1]
    assert result.epochs_run == 1


def test_max_runtime_from_the_spec_stops_training(tmp_path, classification_data):
    # The contract's shortest limit is one second; the run would take minutes without it.
    spec = make_spec(classification_data, limits={"max_runtime_seconds": 1},
                     training={"epochs": 10_000, "batch_size": 16})
    reporter = InMemoryReporter()
    result = train(spec, classification_data, reporter, tmp_path)
    assert result.stop_reason == "max_runtime"
    assert result.epochs_run == len(reporter.epochs) < 10_000
    assert reporter.should_stop_calls < 4 * 10_000
    # Whatever it reached is kept: the best checkpoint of the epochs it completed.
    assert (result.best_checkpoint is None) == (result.epochs_run == 0)


def test_reporter_asking_for_max_runtime(tmp_path, classification_data):
    reporter = InMemoryReporter(stop_after_batches=2, stop_reason="max_runtime")
    result = train(make_spec(classification_data, **SPEC), classification_data, reporter, tmp_path)
    assert result.stop_reason == "max_runtime"


class _FlakyStop(InMemoryReporter):
    def should_stop(self):
        super().should_stop()
        raise ConnectionError("redis down")


def test_a_failing_should_stop_does_not_stop_training(tmp_path, classification_data):
    reporter = _FlakyStop()
    result = train(make_spec(classification_data, **SPEC), classification_data, reporter, tmp_path)
    assert result.stop_reason == "completed"
    assert reporter.should_stop_calls == 12
    assert len(reporter.epochs) == 3


class _FakeModel:
    stop_training = False


def test_unit_unknown_reason_is_treated_as_cancel_and_last_batch_is_not_partial():
    state = RunState()
    callback = StopRequest(lambda: "please", state)
    callback.set_model(_FakeModel())
    callback.set_params({"steps": 4})
    callback.on_train_batch_end(3)
    assert callback.model.stop_training is True
    assert state.stop_reason == "cancelled" and state.partial_epoch is False


def test_unit_deadline_in_the_past():
    state = RunState()
    callback = StopRequest(lambda: None, state, deadline=time.monotonic() - 1)
    callback.set_model(_FakeModel())
    callback.set_params({"steps": 4})
    callback.on_train_batch_end(0)
    assert state.stop_reason == "max_runtime" and state.partial_epoch is True


def test_constructor_arguments_are_validated():
    with pytest.raises(TypeError):
        StopRequest("not callable", RunState())
    with pytest.raises(TypeError):
        StopRequest(lambda: None, object())
    with pytest.raises(TypeError):
        StopRequest(lambda: None, RunState(), deadline="soon")
