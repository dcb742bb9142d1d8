"""How a sweep judges its trials: better values, ranking, and the median early-stopping rule. Pure functions.

A curve is a trial's objective per completed epoch, `{epoch: value}` with epochs counting from 1; a value
that was not finite is None and never counts as an improvement.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

Curve = dict[int, float | None]


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def better(a: float, b: float, mode: str) -> bool:
    """Is `a` strictly better than `b`?"""
    return a < b if mode == "min" else a > b


def best_until(curve: Curve, epoch: int, mode: str) -> float | None:
    """The best finite value of the curve at epochs 1..epoch, or None."""
    best: float | None = None
    for e, value in curve.items():
        value = _finite(value)
        if e <= epoch and value is not None and (best is None or better(value, best, mode)):
            best = value
    return best


def reached(curve: Curve, epoch: int) -> bool:
    return epoch in curve


@dataclass(frozen=True)
class MedianRule:
    """Stop a trial at epoch e (e > grace_epochs) when its best value so far is worse than the median of
    the best-so-far values at epoch e of the sweep's finished trials that reached epoch e; only once at
    least `min_trials` of them did. Finished trials' curves never change, so the decision does not depend
    on how trials happen to interleave on the workers."""

    grace_epochs: int = 1
    min_trials: int = 2

    def should_stop(self, own: Curve, finished: Iterable[Curve], epoch: int, mode: str) -> bool:
        if epoch <= self.grace_epochs:
            return False
        mine = best_until(own, epoch, mode)
        if mine is None:
            return False  # nothing finite yet: terminate-on-NaN, not this rule, ends such a run
        others = [best_until(c, epoch, mode) for c in finished if reached(c, epoch)]
        others = [v for v in others if v is not None]
        if len(others) < self.min_trials:
            return False
        return better(statistics.median(others), mine, mode)


@dataclass(frozen=True)
class TrialResult:
    trial: int
    value: float | None


def rank(trials: Iterable[TrialResult], mode: str) -> list[tuple[int | None, TrialResult]]:
    """Trials with a value first, best first (ties by trial number), ranked 1, 2, ...; then the trials
    without one, unranked, by trial number."""
    trials = list(trials)
    scored = [t for t in trials if _finite(t.value) is not None]
    unscored = [t for t in trials if _finite(t.value) is None]
    sign = 1.0 if mode == "min" else -1.0
    scored.sort(key=lambda t: (sign * float(t.value or 0.0), t.trial))
    unscored.sort(key=lambda t: t.trial)
    return [(i + 1, t) for i, t in enumerate(scored)] + [(None, t) for t in unscored]
