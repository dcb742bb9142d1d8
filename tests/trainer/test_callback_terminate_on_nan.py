import pytest

from workers.trainer import InMemoryReporter, train
from workers.trainer.callbacks import RunState, TerminateOnNaN

from .specs import make_spec


def test_diverging_regression_stops_with_nan_loss(tmp_path, regression_data):
    # Unscaled inputs around 50 and a large rate: the loss overflows within a few steps. Preflight off, so
    # it is this callback (in fit) that sees it, not the preflight.
    spec = make_spec(regression_data, model={"layers": [{"type": "dense", "units": 1}]}, loss="mse",
                     metrics=["mae"], optimizer={"type": "sgd", "learning_rate": 10.0},
                     training={"epochs": 3, "batch_size": 8}, diagnostics={"preflight": False})
    reporter = InMemoryReporter()
    result = train(spec, regression_data, reporter, tmp_path)
    assert result.stop_reason == "nan_loss"
    # It diverges inside epoch 1: stopped at that batch, nothing reported or checkpointed.
    assert reporter.should_stop_calls < 8  # 64 rows, batches of 8
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
