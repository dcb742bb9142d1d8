"""How a sweep ranks its trials. Pure functions. (Early stopping is Optuna's pruners: trainyard/sweeps/study.py.)"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def better(a: float, b: float, mode: str) -> bool:
    """Is `a` strictly better than `b`?"""
    return a < b if mode == "min" else a > b


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
