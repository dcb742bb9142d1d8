import pytest

from workers.trainer import InMemoryReporter, train
from workers.trainer.callbacks import RunState, TerminateOnNaN

from .specs import layer, make_spec, optimizer


def test_diverging_regression_stops_with_nan_loss(tmp_path, regression_data):
    spec = make_spec(
        model={"input_shape": [4], "layers": [layer("dense", units=1)]},
        loss="mse", metrics=["mae"],
        optimizer=optimizer("sgd", learning_rate=1e30),
        training={"epochs": 3, "batch_size": 16},
    )
    reporter = InMemoryReporter()
    result = train(spec, regression_data, reporter, tmp_path)
    assert result.stop_reason == "nan_loss"
    # It diverges inside epoch 1: stopped at that batch, nothing reported or checkpointed.
    assert reporter.should_stop_calls < 4
    assert reporter.epochs == []
    assert reporter.checkpoints == []
    assert result.best_checkpoint is None and result.epochs_run == 0


class _FakeModel:
    stop_training = False


@pytest.mark.parametrize("loss, stops", [(float("nan"), True), (float("inf"), True), (1.5, False)])
def test_unit_non_finite_loss_stops(loss, stops):
    state = RunState()
    callback = TerminateOnNaN(state)
    callback.set_model(_FakeModel())
    callback.on_train_batch_end(0, {"loss": loss})
    callback.on_train_batch_end(1, None)  # logs may be None
    assert callback.model.stop_training is stops
    assert state.stop_reason == ("nan_loss" if stops else None)


def test_constructor_validates_state():
    with pytest.raises(TypeError):
        TerminateOnNaN(None)
