"""How long a job has left: the API's `eta`, worked out from what the job and its resource class did lately.

Pure arithmetic over numbers the API has already read (service/api/representations.py reads them), so it
is unit-tested without a database. Three bases, the `basis` of the answer:

- `recent_epochs`: a running job. One epoch takes the median of its last `RECENT_EPOCHS` epoch times (a
  median, so the first epoch of an attempt, which also builds the graph, does not skew it), and the job has
  `training.epochs` minus the epochs done left, counted from the end of its last epoch.
- `early_stopping`: the same, when early stopping would end the run sooner. Once the monitored value has
  not improved in the last epoch, early stopping ends the run after `patience - epochs since the best` more
  epochs (at least one) unless the value improves again; when that is fewer than the epochs left, it is
  what the estimate counts. `full_length_seconds` keeps the estimate for every epoch.
- `queue_position`: a queued job. The jobs ahead of it in its class's queue and the job itself each take
  the median run time of the tenant's last finished jobs of that class, `workers` at a time (the job runs
  in round `ceil(position / workers)`).

There is no estimate (None) before a running job's first epoch ends (no epoch time yet), for a queued job
whose tenant has no finished job of its class to learn from, and for a job that has ended.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

# How many of a running job's latest epochs its epoch time comes from.
RECENT_EPOCHS = 5
# How many of the tenant's latest finished jobs of a class a queued job's estimate comes from.
RECENT_JOBS = 20


class Basis(StrEnum):
    RECENT_EPOCHS = "recent_epochs"
    EARLY_STOPPING = "early_stopping"
    QUEUE_POSITION = "queue_position"


@dataclass(frozen=True)
class Eta:
    """When a job should end: `seconds` from `now`, so `at` is `now + seconds`; `epochs_left` is what the
    estimate counts, `full_length_seconds` the estimate if the job runs every epoch it asked for."""

    seconds: int
    at: datetime
    basis: Basis
    epochs_left: int
    full_length_seconds: int


def typical(durations: Iterable[float | None]) -> float | None:
    """The median of the durations that are real numbers of seconds (>= 0); None when there are none."""
    values = [float(d) for d in durations if d is not None and math.isfinite(d) and d >= 0]
    return statistics.median(values) if values else None


def early_stopping_epochs_left(done: int, patience: int, start_from_epoch: int, wait: int,
                               triggered: bool = False) -> int | None:
    """Epochs early stopping lets a run go on if its monitored value never improves again, or None while
    that does not bound the run: early stopping has not counted an epoch yet (`start_from_epoch`), or the
    last epoch improved (`wait` is 0).

    `done` counts completed epochs from 1; `wait` is Keras' counter after the last of them (epochs since
    the best). Keras stops at the end of an epoch that does not improve once `wait` reaches `patience`,
    so `max(patience - wait, 1)` more epochs run (`patience` 0 stops at the first that does not improve).
    """
    if triggered:
        return 0
    if done <= start_from_epoch or wait <= 0:
        return None
    return max(patience - wait, 1)


def early_stopping_of(spec: dict[str, Any], resume_state: dict[str, Any] | None, done: int) -> int | None:
    """`early_stopping_epochs_left` for a job from its spec and the state its worker saved after its last
    backed-up epoch (workers/trainer/callbacks/backup.py: `epoch`, `callbacks.early_stopping.wait`).

    A backup a few epochs behind `done` (it is written just after the epoch's metrics) counts the epochs
    since as epochs without improvement. None without early stopping, or before any state was saved once
    early stopping counts epochs."""
    config = (spec.get("callbacks") or {}).get("early_stopping")
    if not config:
        return None
    patience, start = int(config.get("patience") or 0), int(config.get("start_from_epoch") or 0)
    saved = ((resume_state or {}).get("callbacks") or {}).get("early_stopping")
    if not saved:
        return None
    behind = max(done - int((resume_state or {}).get("epoch") or done), 0)
    return early_stopping_epochs_left(done, patience, start, int(saved.get("wait") or 0) + behind,
                                      triggered=int(saved.get("stopped_epoch") or 0) > 0)


def running_eta(now: datetime, last_epoch_end: datetime, epoch_times: Iterable[float | None], done: int,
                epochs: int, early_stop_left: int | None = None) -> Eta | None:
    """A running job's estimate from its recent epoch times (newest first or any order) and `done` of
    `epochs`; `early_stop_left` from `early_stopping_epochs_left`. None before an epoch time is known.

    The epochs left are counted from `last_epoch_end`, so between epochs `at` stays where it is and
    `seconds` counts down; an epoch that overruns its estimate leaves at least the epochs after it."""
    per_epoch = typical(epoch_times)
    if per_epoch is None or done < 1:
        return None
    full_left = max(epochs - done, 0)
    left, basis = full_left, Basis.RECENT_EPOCHS
    if early_stop_left is not None and early_stop_left < full_left:
        left, basis = early_stop_left, Basis.EARLY_STOPPING
    due = (last_epoch_end - now).total_seconds() + left * per_epoch
    seconds = max(due, (left - 1) * per_epoch, 0.0)
    full = seconds + (full_left - left) * per_epoch
    return _eta(now, seconds, basis, left, full)


def queued_eta(now: datetime, position: int, run_times: Iterable[float | None], workers: int,
               epochs_left: int) -> Eta | None:
    """A queued job's estimate from its 1-based `position` in its class's queue, the run times of recent
    jobs of that class and the `workers` that take its jobs (at least one). None without a run time."""
    per_job = typical(run_times)
    if per_job is None or position < 1:
        return None
    seconds = math.ceil(position / max(workers, 1)) * per_job
    return _eta(now, seconds, Basis.QUEUE_POSITION, max(epochs_left, 0), seconds)


def _eta(now: datetime, seconds: float, basis: Basis, epochs_left: int, full: float) -> Eta:
    whole = round(seconds)
    return Eta(seconds=whole, at=(now + timedelta(seconds=whole)).replace(microsecond=0), basis=basis,
               epochs_left=epochs_left, full_length_seconds=max(round(full), whole))
