"""The ETA arithmetic (trainyard/eta.py): pure functions of durations, epochs, positions and early stopping's
counters; the early-stopping bound is held to Keras' own EarlyStopping callback."""
from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from hypothesis import given, settings, strategies as st

from trainyard.eta import (Basis, early_stopping_epochs_left, early_stopping_of, queued_eta, running_eta,
                           typical)

NOW = datetime(2026, 12, 6, 12, 0, 0, tzinfo=timezone.utc)


def test_typical_is_the_median_of_real_durations() -> None:
    assert typical([3.0, 1.0, 2.0]) == 2.0
    assert typical([9.5, 1.0, 1.2, 1.1]) == pytest.approx(1.15)  # one slow epoch (graph building) does not count
    assert typical([None, math.nan, -1.0, 4.0]) == 4.0
    assert typical([]) is None and typical([None]) is None


def test_a_running_job_counts_its_epochs_left_from_the_end_of_its_last_epoch() -> None:
    # Epoch 1 took 9 s (tracing), later ones 2 s; 3 of 10 done, the last ended 0.6 s ago.
    eta = running_eta(NOW, NOW - timedelta(seconds=0.6), [2.0, 2.0, 9.0], done=3, epochs=10)
    assert eta is not None
    assert eta.basis is Basis.RECENT_EPOCHS and eta.epochs_left == 7
    assert eta.seconds == round(7 * 2.0 - 0.6) == 13
    assert eta.at == NOW + timedelta(seconds=13)
    assert eta.full_length_seconds == eta.seconds


def test_between_epochs_at_stays_put_while_seconds_count_down() -> None:
    end = NOW - timedelta(seconds=1)
    first = running_eta(NOW, end, [4.0], done=2, epochs=5)
    later = running_eta(NOW + timedelta(seconds=3), end, [4.0], done=2, epochs=5)
    assert first is not None and later is not None
    assert (first.seconds, later.seconds) == (11, 8)
    assert first.at == later.at


def test_an_overrunning_epoch_still_leaves_the_epochs_after_it() -> None:
    eta = running_eta(NOW, NOW - timedelta(seconds=100), [2.0], done=3, epochs=10)
    assert eta is not None and eta.seconds == 6 * 2  # epoch 4 is overdue; epochs 5..10 remain


def test_the_early_stopping_bound_applies_only_when_it_is_sooner() -> None:
    eta = running_eta(NOW, NOW, [2.0], done=3, epochs=10, early_stop_left=2)
    assert eta is not None
    assert (eta.basis, eta.epochs_left, eta.seconds, eta.full_length_seconds) == (Basis.EARLY_STOPPING, 2, 4, 14)
    later = running_eta(NOW, NOW, [2.0], done=3, epochs=10, early_stop_left=9)
    assert later is not None and (later.basis, later.epochs_left, later.seconds) == (Basis.RECENT_EPOCHS, 7, 14)


def test_the_last_epoch_done_leaves_nothing() -> None:
    eta = running_eta(NOW, NOW - timedelta(seconds=5), [2.0], done=10, epochs=10)
    assert eta is not None and (eta.seconds, eta.epochs_left) == (0, 0)


def test_no_estimate_without_an_epoch_time() -> None:
    assert running_eta(NOW, NOW, [], done=0, epochs=10) is None
    assert running_eta(NOW, NOW, [None], done=1, epochs=10) is None


@pytest.mark.parametrize("position, workers, runs", [(1, 1, 1), (3, 1, 3), (3, 2, 2), (4, 2, 2), (1, 0, 1)])
def test_a_queued_job_ends_after_its_round_of_runs(position: int, workers: int, runs: int) -> None:
    eta = queued_eta(NOW, position, [10.0, 30.0, 20.0], workers, epochs_left=7)
    assert eta is not None
    assert (eta.basis, eta.seconds, eta.epochs_left) == (Basis.QUEUE_POSITION, runs * 20, 7)
    assert eta.at == NOW + timedelta(seconds=runs * 20) and eta.full_length_seconds == eta.seconds


def test_a_queued_job_without_history_has_no_estimate() -> None:
    assert queued_eta(NOW, 1, [], 1, 5) is None


def test_early_stopping_of_reads_the_spec_and_the_saved_state() -> None:
    spec = {"callbacks": {"early_stopping": {"patience": 5, "start_from_epoch": 0}}}

    def state(epoch: int, wait: int, stopped: int = 0) -> dict:
        return {"epoch": epoch, "callbacks": {"early_stopping": {"wait": wait, "stopped_epoch": stopped}}}

    assert early_stopping_of(spec, state(7, 2), done=7) == 3
    assert early_stopping_of(spec, state(6, 2), done=7) == 2  # the backup of epoch 7 is not written yet
    assert early_stopping_of(spec, state(7, 0), done=7) is None  # it just improved
    assert early_stopping_of(spec, state(7, 9), done=7) == 1  # at least the next epoch runs
    assert early_stopping_of(spec, state(7, 5, stopped=6), done=7) == 0
    assert early_stopping_of(spec, None, done=7) is None
    assert early_stopping_of({"callbacks": {"early_stopping": None}}, state(7, 2), done=7) is None
    assert early_stopping_of({}, state(7, 2), done=7) is None


@settings(max_examples=200, deadline=None)
@given(patience=st.integers(0, 6), start=st.integers(0, 4),
       values=st.lists(st.floats(0.0, 10.0, allow_nan=False), min_size=1, max_size=10))
def test_the_bound_is_when_keras_early_stopping_stops_without_improvement(
        patience: int, start: int, values: list[float]) -> None:
    from workers.trainer.callbacks import EarlyStopping, RunState

    callback = EarlyStopping(RunState(), monitor="val_loss", patience=patience, mode="min",
                             start_from_epoch=start)
    callback.set_model(SimpleNamespace(stop_training=False))
    callback.on_train_begin()
    for epoch, value in enumerate(values):
        callback.on_epoch_end(epoch, {"val_loss": value})
        if callback.model.stop_training:
            return  # it already stopped: nothing left to predict
    done = len(values)
    left = early_stopping_epochs_left(done, patience, start, int(callback.wait))
    if left is None:
        assert done <= start or callback.wait == 0
        return
    # From here on nothing improves: Keras stops exactly `left` epochs later.
    more = 0
    while not callback.model.stop_training:
        callback.on_epoch_end(done + more, {"val_loss": 1e6})
        more += 1
        assert more <= patience + 1
    assert more == left
