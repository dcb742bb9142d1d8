"""The learning-rate range test (Smith 2015, "Cyclical Learning Rates"; fastai's ``lr_find``).

Before training, on a copy of the state, the compiled model trains ``steps`` optimizer steps on batches of
the training rows (a fixed random sample of at most ``steps`` batches, cycled when the data set is smaller)
with the learning rate growing exponentially from ``START_RATE`` to ``END_RATE``, one rate per step. The loss of each step is smoothed exponentially (beta 0.98, with
fastai's bias correction, so the first points are not pulled towards zero). The sweep ends early when the
smoothed loss passes ``DIVERGENCE_FACTOR`` times its lowest value, or any loss is NaN/inf: past that
point the curve says nothing more. Every variable is then put back (snapshot.py), so training starts
from the weights, optimizer state and random stream it would have had without the test.

The suggested rate (``suggest``, rule ``RULE``, fastai's default since 2.5): the rate half-way down the
longest valley of the smoothed curve. The longest decreasing subsequence of the smoothed loss has ``n``
points and ends at step ``e``; the valley is the ``n`` steps up to ``e``, and the suggestion the rate at
step ``e - n/2`` (fastai's arithmetic: ``start + n/3 + n/6``), clipped to the spec's learning-rate range.

The cost is bounded: at most ``MAX_STEPS`` steps (and no more steps than the run itself trains, though
at least ``MIN_STEPS``), through the train function fit uses anyway (it is traced once, here, and the
real run reuses the trace).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import keras
import numpy as np

from ..data import make_dataset
from ..snapshot import restored_afterwards

logger = logging.getLogger(__name__)

START_RATE = 1e-7
END_RATE = 10.0
MAX_STEPS = 100
MIN_STEPS = 20
SMOOTHING = 0.98
DIVERGENCE_FACTOR = 4.0
# Steps before divergence is judged: the first smoothed losses rest on a handful of batches.
WARMUP_STEPS = 5
RULE = "valley"
# optimizer.learning_rate's allowed range (trainyard/spec/bounds.py LEARNING_RATE; a test holds them equal).
LEARNING_RATE_RANGE = (1e-10, 10.0)


@dataclass
class RangeTestResult:
    """The sweep's curve and the rate it suggests (None when no step had a finite loss)."""

    rates: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)          # smoothed
    raw_losses: list[float] = field(default_factory=list)      # each step's own loss
    suggested: float | None = None
    min_loss_rate: float | None = None
    steps_planned: int = 0
    ended: str = "completed"     # completed | diverged | stop_requested
    seconds: float = 0.0

    def record(self) -> dict:
        """What the job's diagnostics show (JSON: every number finite)."""
        return {
            "rule": RULE,
            "suggested_learning_rate": self.suggested,
            "min_loss_learning_rate": None if self.min_loss_rate is None else _round(self.min_loss_rate),
            "start_learning_rate": START_RATE,
            "end_learning_rate": END_RATE,
            "steps": len(self.rates),
            "steps_planned": self.steps_planned,
            "ended": self.ended,
            "seconds": round(self.seconds, 4),
            "curve": [{"learning_rate": _round(r), "loss": _round(loss)}
                      for r, loss in zip(self.rates, self.losses)],
        }


def _round(x: float) -> float:
    return float(f"{x:.6g}")


def planned_steps(run_steps: int) -> int:
    """Steps of the sweep for a run of ``run_steps`` optimizer steps: never more than MAX_STEPS."""
    return max(MIN_STEPS, min(MAX_STEPS, int(run_steps)))


def rate_at(step: int, steps: int) -> float:
    """The sweep's rate at ``step`` (from 0) of ``steps``: START_RATE to END_RATE, evenly in log space."""
    if steps <= 1:
        return START_RATE
    return START_RATE * (END_RATE / START_RATE) ** (step / (steps - 1))


def valley(losses: list[float]) -> tuple[int, int]:
    """(start, end) of the longest valley as fastai counts it: the longest decreasing subsequence of
    ``losses`` (not necessarily consecutive steps) has ``n`` points and ends at step ``end``; the valley is
    the ``n`` steps before ``end``. Counting steps back from the end (rather than from the subsequence's
    first point) keeps a few noisy dips early in the flat part of the curve from stretching the valley into
    it."""
    longest = [1] * len(losses)  # the longest decreasing subsequence ending at each step
    end = 0
    for i in range(1, len(losses)):
        for j in range(i):
            if losses[i] < losses[j] and longest[i] < longest[j] + 1:
                longest[i] = longest[j] + 1
        if longest[i] > longest[end]:
            end = i
    return max(end - longest[end], 0), end


def suggest(rates: list[float], losses: list[float]) -> float | None:
    """The rate half-way down the longest valley of the smoothed curve, clipped to the spec's range.

    fastai's ``valley`` rule (its default since 2.5): the loss falls over the whole valley, so a rate in it
    trains, and its middle sits safely below where the fall ends and the blow-up begins. On builtin:digits
    it gives Adam about 2e-3..5e-3 and SGD about 1e-2..8e-2 (with momentum 0.9 about 1e-2..3e-2), each of
    which trains to >= 0.95 accuracy; a tenth of the rate at the lowest loss (the older rule) overshoots
    SGD with momentum, and a valley measured from its first point lands in the flat, noisy start.
    """
    if not rates:
        return None
    start, end = valley(losses)
    third = (end - start) / 3
    index = min(start + int(third) + int(third / 2), len(rates) - 1)
    low, high = LEARNING_RATE_RANGE
    return float(f"{min(max(rates[index], low), high):.3g}")


class _Sweep(keras.callbacks.Callback):
    """One epoch of ``steps`` steps: each step's rate is set as it begins, and its loss is read from the
    epoch's running mean as it ends. Keras' loss tracker weighs each step's loss by its batch's size, so
    with the sizes known the step's own loss is ``(mean_k * W_k - mean_k-1 * W_k-1) / size_k``, W the
    sizes summed (exact up to float32 rounding of the mean, ~1e-5 of a loss over 100 steps). One epoch
    instead of one-step epochs: the per-epoch work of ``fit`` cost three times a step of a small model.
    """

    def __init__(self, steps: int, batch_sizes: list[int], should_stop: Callable[[], object] | None) -> None:
        super().__init__()
        self.steps = steps
        self.batch_sizes = batch_sizes
        self.should_stop = should_stop
        self.rates: list[float] = []
        self.raw: list[float] = []
        self.smoothed: list[float] = []
        self.ended = "completed"
        self._average = 0.0
        self._total = 0.0   # the loss tracker's sum so far: each step's loss times its batch size
        self._weight = 0    # ... and the batch sizes summed

    def on_train_batch_begin(self, batch, logs=None):
        rate = rate_at(batch, self.steps)
        self.model.optimizer.learning_rate = rate
        self.rates.append(rate)

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        size = self.batch_sizes[batch]
        weight = self._weight + size
        total = float(logs.get("loss", float("nan"))) * weight
        loss = (total - self._total) / size
        self._total, self._weight = total, weight
        if not math.isfinite(loss):
            self.rates.pop()
            self.ended = "diverged"
            self.model.stop_training = True
            return
        self.raw.append(loss)
        self._average = SMOOTHING * self._average + (1 - SMOOTHING) * loss
        smoothed = self._average / (1 - SMOOTHING ** len(self.raw))
        self.smoothed.append(smoothed)
        if len(self.smoothed) > WARMUP_STEPS and smoothed > DIVERGENCE_FACTOR * min(self.smoothed):
            self.ended = "diverged"
            self.model.stop_training = True
        elif self.should_stop is not None and self.should_stop():
            self.ended = "stop_requested"
            self.model.stop_training = True


def _batch_sizes(rows: int, batch_size: int, steps: int) -> list[int]:
    """The size of each of ``steps`` batches of ``rows`` rows, the data cycled (each pass ends short)."""
    one_pass = [batch_size] * (rows // batch_size) + ([rows % batch_size] if rows % batch_size else [])
    return [one_pass[i % len(one_pass)] for i in range(steps)]


def range_test(model: keras.Model, x: np.ndarray, y: np.ndarray, batch_size: int, *, steps: int = MAX_STEPS,
               should_stop: Callable[[], object] | None = None,
               class_weight: dict[int, float] | None = None) -> RangeTestResult:
    """Sweep the rate over ``steps`` steps of the compiled ``model`` (whose optimizer must have a constant,
    settable rate) on the batches of (x, y), cycled; restore every variable; return the curve and the
    suggestion. ``should_stop`` is asked after each step: a truthy answer ends the sweep there.
    ``class_weight`` is the run's own (``training.class_weight``): the loss it sweeps is the one training
    minimises, and fit's trace depends on it.
    """
    began = time.perf_counter()
    steps = max(1, min(int(steps), MAX_STEPS))
    # The rows the steps need and no more (a 2 GB data set is not copied for 100 steps), in a fixed random
    # order: a data set sorted by class would otherwise show the sweep one class at a time. A generator of
    # its own, so no global random stream moves.
    rows = np.random.default_rng(0).permutation(len(x))[: steps * int(batch_size)]
    x, y = x[rows], y[rows]
    sweep = _Sweep(steps, _batch_sizes(len(x), int(batch_size), steps), should_stop)
    with restored_afterwards(model):
        # The same data pipeline as the real run (element spec included): fit reuses the trace.
        model.fit(make_dataset(x, y, batch_size).repeat(), epochs=1, steps_per_epoch=steps, verbose=0,
                  callbacks=[sweep], shuffle=False, class_weight=class_weight)
    result = RangeTestResult(rates=sweep.rates[: len(sweep.smoothed)], losses=sweep.smoothed,
                             raw_losses=sweep.raw, steps_planned=steps, ended=sweep.ended)
    # Points after the divergence threshold only show the blow-up; the suggestion reads the curve up to it.
    result.suggested = suggest(result.rates, result.losses)
    if result.losses:
        result.min_loss_rate = result.rates[int(np.argmin(result.losses))]
    result.seconds = time.perf_counter() - began
    logger.info("learning-rate range test: %d of %d steps (%s), lowest loss at %s, suggests %s (%s), %.3f s",
                len(result.rates), steps, result.ended, result.min_loss_rate, result.suggested, RULE,
                result.seconds)
    return result
