"""Ranking (trainyard/sweeps/rules.py); early stopping is Optuna's pruners (tests/sweeps/test_study.py)."""
from __future__ import annotations

import math

from trainyard.sweeps.rules import TrialResult, rank


def test_rank_orders_by_mode_then_trial_and_puts_unscored_last() -> None:
    trials = [TrialResult(0, 0.5), TrialResult(1, None), TrialResult(2, 0.2), TrialResult(3, 0.5),
              TrialResult(4, math.nan)]
    assert [(pos, t.trial) for pos, t in rank(trials, "min")] == [(1, 2), (2, 0), (3, 3), (None, 1), (None, 4)]
    assert [(pos, t.trial) for pos, t in rank(trials, "max")] == [(1, 0), (2, 3), (3, 2), (None, 1), (None, 4)]
    assert rank([], "min") == []
