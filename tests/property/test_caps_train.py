"""Every number at its cap, and at its floor, is accepted and trains through the real engine.

The caps (trainyard/spec/bounds.py) were chosen so that the engine can use any value inside them; this
holds them to it. Each spec sets every number of an optimizer, a schedule, the callbacks and the layers to
the bound the schema declares (read from the schema, not restated), then trains one epoch of tiny data
and must end in a stop reason other than `error` (`nan_loss` is a fine end for a learning rate of 10).
"""
from __future__ import annotations

import tempfile
from typing import Any

import keras
import numpy as np
import pytest
from marshmallow import Schema

from trainyard.spec import DatasetInfo, validate_spec
from trainyard.spec.fields import Float, Int
from trainyard.spec.layers import LAYER_SCHEMAS, RegularizerSchema
from trainyard.spec.schema import OPTIMIZER_SCHEMAS, SCHEDULE_SCHEMAS, EarlyStoppingSchema, ReduceLrOnPlateauSchema
from tests.property.schema_walk import range_of
from workers.trainer import InMemoryReporter, TrainData, train
from trainyard.stop_reasons import StopReason

DATASET = "ds_" + "c" * 32
INFO = DatasetInfo(DATASET, (6, 3), "classification", 3, False, False, (), 32)
# Left at its default: a warm-up longer than the run is refused (and the run here is one epoch).
KEPT = {"warmup_steps"}


def at_bound(schema_class: type[Schema], which: str, **extra: Any) -> dict[str, Any]:
    """Every Float and Int field of `schema_class` at its declared minimum or maximum."""
    out: dict[str, Any] = {}
    for name, field in schema_class().fields.items():
        bound = range_of(field)
        if isinstance(field, (Float, Int)) and bound is not None and name not in KEPT:
            out[name] = bound.max if which == "max" else bound.min
    out.update(extra)
    return out


def spec(which: str, optimizer: str, schedule: str) -> dict[str, Any]:
    clip = {"clipvalue": None} if which == "max" else {"clipnorm": None}  # one of the two, not both
    layer = lambda kind, **extra: {"type": kind, **at_bound(LAYER_SCHEMAS[kind], which, **extra)}  # noqa: E731
    regularizer = at_bound(RegularizerSchema, which)
    callbacks: dict[str, Any] = {"early_stopping": at_bound(EarlyStoppingSchema, which)}
    if schedule == "constant":
        callbacks["reduce_lr_on_plateau"] = at_bound(ReduceLrOnPlateauSchema, which)
    schedule_spec = {"type": schedule, **at_bound(SCHEDULE_SCHEMAS[schedule], which)}
    if schedule == "piecewise_constant":  # its numbers are lists: the longest, each item at its bound
        fields = SCHEDULE_SCHEMAS[schedule]().fields
        rate = range_of(fields["values"].inner)
        count = fields["boundaries"].max_length
        schedule_spec.update(boundaries=list(range(1, count + 1)),
                             values=[rate.max if which == "max" else rate.min] * (count + 1))
    return {
        "dataset": {"id": DATASET, "validation_split": 0.25},
        "model": {"input_shape": [6, 3], "layers": [
            layer("batch_normalization"),
            layer("layer_normalization"),
            layer("dropout"),
            layer("lstm", units=4, kernel_regularizer=regularizer),
            layer("dense", units=3, activation="softmax", kernel_regularizer=regularizer,
                  bias_regularizer=regularizer),
        ]},
        "loss": "sparse_categorical_crossentropy",
        "metrics": ["accuracy"],
        "optimizer": {"type": optimizer, **at_bound(OPTIMIZER_SCHEMAS[optimizer], which), **clip},
        "schedule": schedule_spec,
        "callbacks": callbacks,
        "training": {"epochs": 1, "batch_size": 8, "seed": 0},
    }


PAIRS = list(zip(OPTIMIZER_SCHEMAS, SCHEDULE_SCHEMAS))


@pytest.mark.parametrize("which", ["max", "min"])
@pytest.mark.parametrize("optimizer, schedule", PAIRS, ids=[f"{o}-{s}" for o, s in PAIRS])
def test_every_number_at_its_bound_trains(which: str, optimizer: str, schedule: str) -> None:
    normalised = validate_spec(spec(which, optimizer, schedule), datasets=lambda i: INFO)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 6, 3)).astype(np.float32)
    y = np.arange(32) % 3
    with tempfile.TemporaryDirectory() as workdir:
        result = train(normalised, TrainData(x, y), InMemoryReporter(), workdir)
    keras.backend.clear_session()
    assert StopReason.parse(result.stop_reason) is not None and result.stop_reason != "error", result
