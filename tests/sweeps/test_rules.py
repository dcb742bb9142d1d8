"""Ranking and the median early-stopping rule (trainyard/sweeps/rules.py)."""
from __future__ import annotations

import math

from trainyard.sweeps.rules import MedianRule, TrialResult, best_until, rank


def test_best_until_ignores_later_epochs_and_non_finite_values() -> None:
    curve = {1: 0.9, 2: None, 3: 0.5, 4: 0.7}
    assert best_until(curve, 1, "min") == 0.9
    assert best_until(curve, 2, "min") == 0.9
    assert best_until(curve, 4, "min") == 0.5
    assert best_until(curve, 4, "max") == 0.9
    assert best_until({1: math.nan, 2: math.inf}, 2, "min") is None


def test_rank_orders_by_mode_then_trial_and_puts_unscored_last() -> None:
    trials = [TrialResult(0, 0.5), TrialResult(1, None), TrialResult(2, 0.2), TrialResult(3, 0.5),
              TrialResult(4, math.nan)]
    assert [(pos, t.trial) for pos, t in rank(trials, "min")] == [(1, 2), (2, 0), (3, 3), (None, 1), (None, 4)]
    assert [(pos, t.trial) for pos, t in rank(trials, "max")] == [(1, 0), (2, 3), (3, 2), (None, 1), (None, 4)]
    assert rank([], "min") == []


def test_median_rule_stops_a_trial_worse_than_the_median_of_finished_trials() -> None:
    rule = MedianRule(grace_epochs=1, min_trials=2)
    finished = [{1: 1.0, 2: 0.6, 3: 0.4}, {1: 1.0, 2: 0.5, 3: 0.3}, {1: 1.0, 2: 0.7, 3: 0.5}]
    bad = {1: 1.1, 2: 0.9}
    good = {1: 1.1, 2: 0.55}
    assert rule.should_stop(bad, finished, 2, "min")  # 0.9 is worse than the median 0.6
    assert not rule.should_stop(good, finished, 2, "min")  # 0.55 beats it
    assert not rule.should_stop({1: 1.1, 2: 0.6}, finished, 2, "min")  # equal to the median is not worse
    # The trial's best so far counts, not its latest value: a bad epoch after a good one is forgiven.
    assert not rule.should_stop({1: 0.5, 2: 0.9}, finished, 2, "min")
    # For a metric to maximise, lower is worse.
    acc = [{1: 0.5, 2: 0.8}, {1: 0.5, 2: 0.9}]
    assert rule.should_stop({1: 0.4, 2: 0.6}, acc, 2, "max")
    assert not rule.should_stop({1: 0.4, 2: 0.95}, acc, 2, "max")


def test_median_rule_waits_for_the_grace_period_and_enough_finished_trials() -> None:
    finished = [{1: 0.5, 2: 0.4, 3: 0.3}, {1: 0.5, 2: 0.4}]
    bad = {1: 2.0, 2: 2.0, 3: 2.0}
    assert not MedianRule(grace_epochs=2, min_trials=2).should_stop(bad, finished, 2, "min")  # still in grace
    assert MedianRule(grace_epochs=2, min_trials=1).should_stop(bad, finished, 3, "min")
    # Only one finished trial reached epoch 3 (the other was stopped at 2): not enough for min_trials=2.
    assert not MedianRule(grace_epochs=2, min_trials=2).should_stop(bad, finished, 3, "min")
    assert MedianRule(grace_epochs=0, min_trials=2).should_stop(bad, finished, 1, "min")
    # A trial with nothing finite yet is left to terminate-on-NaN.
    assert not MedianRule(grace_epochs=0, min_trials=1).should_stop({1: None}, finished, 1, "min")
