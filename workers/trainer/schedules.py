"""Learning-rate schedules from Keras' own classes, so saved models load without custom objects."""

from __future__ import annotations

import keras

_UNITS = ("epoch", "step")


def _steps(value: float, multiplier: int) -> float:
    return value * multiplier


def build_schedule(
    schedule: dict | None, base_rate: float, steps_per_epoch: int
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The optimizer's ``learning_rate`` argument: ``base_rate`` or a Keras schedule.

    With ``unit: epoch`` every step count is multiplied by the real ``steps_per_epoch``, so a schedule
    stated in epochs changes exactly at epoch boundaries.
    """
    if schedule is None or schedule.get("type", "constant") == "constant":
        return float(base_rate)
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    unit = schedule.get("unit", "epoch")
    if unit not in _UNITS:
        raise ValueError(f"schedule.unit must be one of {_UNITS}, got {unit!r}")
    per = steps_per_epoch if unit == "epoch" else 1
    kind = schedule["type"]
    lr0 = float(base_rate)
    schedules = keras.optimizers.schedules

    if kind == "exponential_decay":
        return schedules.ExponentialDecay(
            initial_learning_rate=lr0,
            decay_steps=_steps(schedule["decay_steps"], per),
            decay_rate=float(schedule["decay_rate"]),
            staircase=bool(schedule.get("staircase", False)),
        )
    if kind == "inverse_time_decay":
        return schedules.InverseTimeDecay(
            initial_learning_rate=lr0,
            decay_steps=_steps(schedule["decay_steps"], per),
            decay_rate=float(schedule["decay_rate"]),
            staircase=bool(schedule.get("staircase", False)),
        )
    if kind == "piecewise_constant":
        boundaries = [int(b) for b in schedule["boundaries"]]
        values = [float(v) for v in schedule["values"]]
        if len(values) != len(boundaries) + 1:
            raise ValueError("piecewise_constant needs len(values) == len(boundaries) + 1")
        if unit == "epoch":
            # Keras switches when step > boundary. Step k (from 0) is the (k+1)-th update, so
            # "from epoch B+1 on" means step >= B*per, i.e. step > B*per - 1.
            boundaries = [b * per - 1 for b in boundaries]
        return schedules.PiecewiseConstantDecay(boundaries=boundaries, values=values)
    if kind == "cosine_decay":
        warmup_steps = _steps(schedule.get("warmup_steps") or 0, per)
        warmup_target = schedule.get("warmup_target")
        if warmup_target is None and warmup_steps > 0:
            # design.md: a null target means the base rate, so the warm-up holds the base rate.
            warmup_target = lr0
        return schedules.CosineDecay(
            initial_learning_rate=lr0,
            decay_steps=_steps(schedule["decay_steps"], per),
            alpha=float(schedule.get("alpha", 0.0)),
            warmup_target=None if warmup_target is None else float(warmup_target),
            warmup_steps=warmup_steps,
        )
    if kind == "polynomial_decay":
        return schedules.PolynomialDecay(
            initial_learning_rate=lr0,
            decay_steps=_steps(schedule["decay_steps"], per),
            end_learning_rate=float(schedule.get("end_learning_rate", 1e-4)),
            power=float(schedule.get("power", 1.0)),
            cycle=bool(schedule.get("cycle", False)),
        )
    raise ValueError(f"unknown schedule type {kind!r}")
