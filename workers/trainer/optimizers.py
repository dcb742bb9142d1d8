"""Optimizers from the normalised spec: explicit constructors per allow-listed type."""

from __future__ import annotations

import keras

from .schedules import build_schedule

_COMMON = ("learning_rate", "clipnorm", "clipvalue")
_OPTIMIZERS = {
    "sgd": (keras.optimizers.SGD, ("momentum", "nesterov")),
    "adam": (keras.optimizers.Adam, ("beta_1", "beta_2", "epsilon", "amsgrad")),
    "adamw": (keras.optimizers.AdamW, ("beta_1", "beta_2", "epsilon", "amsgrad", "weight_decay")),
    "nadam": (keras.optimizers.Nadam, ("beta_1", "beta_2", "epsilon")),
    "rmsprop": (keras.optimizers.RMSprop, ("rho", "momentum", "epsilon", "centered")),
    "adagrad": (keras.optimizers.Adagrad, ("initial_accumulator_value", "epsilon")),
}
OPTIMIZER_TYPES = tuple(_OPTIMIZERS)


def build_optimizer(
    optimizer: dict, schedule: dict | None = None, steps_per_epoch: int = 1
) -> keras.optimizers.Optimizer:
    kind = optimizer.get("type")
    if kind not in _OPTIMIZERS:
        raise ValueError(f"unknown optimizer {kind!r}; allowed: {sorted(_OPTIMIZERS)}")
    cls, specific = _OPTIMIZERS[kind]
    allowed = _COMMON + specific
    unknown = set(optimizer) - set(allowed) - {"type"}
    if unknown:
        raise ValueError(f"optimizer {kind!r} does not take {sorted(unknown)}")
    kwargs = {key: optimizer[key] for key in specific if optimizer.get(key) is not None}
    clipnorm, clipvalue = optimizer.get("clipnorm"), optimizer.get("clipvalue")
    if clipnorm is not None and clipvalue is not None:
        raise ValueError("set at most one of clipnorm and clipvalue")
    base_rate = optimizer.get("learning_rate", 0.001)
    return cls(
        learning_rate=build_schedule(schedule, base_rate, steps_per_epoch),
        clipnorm=clipnorm,
        clipvalue=clipvalue,
        **kwargs,
    )
