import pytest

from workers.trainer import InMemoryReporter, train
from workers.trainer.callbacks import EarlyStopping, RunState

from .specs import make_spec


def _early_stopping(**overrides):
    args = {"monitor": "loss", "patience": 0, "min_delta": 1e9, "mode": "min",
            "restore_best_weights": True, "start_from_epoch": 0}
    return {**args, **overrides}


def test_stops_when_the_monitor_stops_improving(tmp_path, classification_data):
    # min_delta 1e9: no epoch after the first counts as an improvement.
    spec = make_spec(classification_data, callbacks={"early_stopping": _early_stopping()}, training={"epochs": 5})
    reporter = InMemoryReporter()
    result = train(spec, classification_data, reporter, tmp_path)
    assert result.stop_reason == "early_stopping"
    assert result.epochs_run == 2
    assert [epoch for epoch, _ in reporter.epochs] == [1, 2]


def test_start_from_epoch_delays_it(tmp_path, classification_data):
    spec = make_spec(classification_data, callbacks={"early_stopping": _early_stopping(start_from_epoch=2)},
                     training={"epochs": 5})
    result = train(spec, classification_data, InMemoryReporter(), tmp_path)
    assert result.stop_reason == "early_stopping" and result.epochs_run == 4


def test_runs_to_completion_when_improving(tmp_path, classification_data):
    spec = make_spec(classification_data, callbacks={"early_stopping": _early_stopping(min_delta=0.0, patience=5)},
                     training={"epochs": 2})
    result = train(spec, classification_data, InMemoryReporter(), tmp_path)
    assert result.stop_reason == "completed" and result.epochs_run == 2


def test_partial_epochs_are_ignored():
    state = RunState()
    callback = EarlyStopping(state, monitor="loss", patience=0)
    state.request_stop("cancelled", partial=True)
    callback.on_epoch_end(0, {"loss": 1.0})
    assert callback.best is None


@pytest.mark.parametrize("bad", [{"patience": -1}, {"min_delta": -0.1}, {"mode": "lowest"},
                                 {"monitor": ""}, {"start_from_epoch": -2}, {"patience": 1.5}])
def test_constructor_arguments_are_validated(bad):
    with pytest.raises(ValueError):
        EarlyStopping(RunState(), **{**_early_stopping(), **bad})
