"""The v1 job-spec schema: field types, allow-lists, ranges and defaults.

Checks that need more than one field, the data set or operator limits live in `checks.py`; values
that depend on them (validation split, monitors, modes) are left `None` here and resolved there.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Any

from marshmallow import ValidationError, pre_load, validate, validates_schema

from trainyard.spec import bounds
from trainyard.spec.catalog import BUILTIN_ID_RE, UPLOADED_ID_RE
from trainyard.spec.fields import (
    Bool, Choice, Float, FloatOrWord, Int, List, Object, SpecSchema, Str, Tagged, type_field,
)
from trainyard.spec.labels import Labels
from trainyard.spec.layers import ModelSchema
from trainyard.names import LEARNING_RATE_AUTO, LOSS_ALIASES, LOSSES, METRICS

SEED_MAX = 2**31 - 1
NORMALIZATIONS = ["none", "standardize", "minmax"]
TARGET_NORMALIZATIONS = ["none", "standardize"]
MONITOR_MODES = ["auto", "min", "max"]

# A display label: no slashes, backslashes or colons, so it can never read as a path or URL.
_NAME_RE = re.compile(r"^(?:\w[\w .()\-]*)?\Z")  # empty is left to the Length check


def _with_defaults(data: Any, defaults: dict[str, Any]) -> Any:
    """Fill absent keys with raw defaults so they go through the same schema as client values."""
    if not isinstance(data, dict):
        return data  # marshmallow reports the wrong type
    return {**defaults, **data}


def _check_dataset_id(value: str) -> None:
    if not (BUILTIN_ID_RE.match(value) or UPLOADED_ID_RE.match(value)):
        raise ValidationError(
            "Must be a built-in data set id (builtin:<name>) or an uploaded data set id "
            "(ds_ followed by 32 hex digits)."
        )


class DatasetSchema(SpecSchema):
    id = Str(required=True, validate=_check_dataset_id)
    validation_split = Float(allow_none=True, load_default=None, validate=bounds.VALIDATION_SPLIT)
    normalize = Choice(NORMALIZATIONS, load_default="none")
    normalize_targets = Choice(TARGET_NORMALIZATIONS, load_default="none")


# --- optimizers ----------------------------------------------------------------------------------


def _learning_rate(default: float) -> FloatOrWord:
    # "auto": the learning-rate range test picks the rate before training (diagnostics.lr_range_test).
    return FloatOrWord((LEARNING_RATE_AUTO,), load_default=default, validate=bounds.LEARNING_RATE)


class _OptimizerBase(SpecSchema):
    learning_rate = _learning_rate(0.001)
    clipnorm = Float(allow_none=True, load_default=None, validate=bounds.CLIP)
    clipvalue = Float(allow_none=True, load_default=None, validate=bounds.CLIP)

    @validates_schema
    def _one_clip(self, data: dict, **kwargs: Any) -> None:
        if data.get("clipnorm") is not None and data.get("clipvalue") is not None:
            raise ValidationError("Set clipnorm or clipvalue, not both.", "clipvalue")


class SgdSchema(_OptimizerBase):
    type = type_field("sgd")
    learning_rate = _learning_rate(0.01)
    momentum = Float(load_default=0.0, validate=bounds.MOMENTUM)
    nesterov = Bool(load_default=False)


class _AdamFamily(_OptimizerBase):
    beta_1 = Float(load_default=0.9, validate=bounds.MOMENTUM)
    beta_2 = Float(load_default=0.999, validate=bounds.MOMENTUM)
    epsilon = Float(load_default=1e-7, validate=bounds.EPSILON)


class AdamSchema(_AdamFamily):
    type = type_field("adam")
    amsgrad = Bool(load_default=False)


class AdamWSchema(_AdamFamily):
    type = type_field("adamw")
    amsgrad = Bool(load_default=False)
    weight_decay = Float(load_default=0.004, validate=bounds.WEIGHT_DECAY)


class NadamSchema(_AdamFamily):
    type = type_field("nadam")


class RmspropSchema(_OptimizerBase):
    type = type_field("rmsprop")
    rho = Float(load_default=0.9, validate=bounds.MOMENTUM)
    momentum = Float(load_default=0.0, validate=bounds.MOMENTUM)
    epsilon = Float(load_default=1e-7, validate=bounds.EPSILON)
    centered = Bool(load_default=False)


class AdagradSchema(_OptimizerBase):
    type = type_field("adagrad")
    initial_accumulator_value = Float(load_default=0.1, validate=bounds.ACCUMULATOR)
    epsilon = Float(load_default=1e-7, validate=bounds.EPSILON)


OPTIMIZER_SCHEMAS: dict[str, type[SpecSchema]] = {
    "sgd": SgdSchema,
    "adam": AdamSchema,
    "adamw": AdamWSchema,
    "nadam": NadamSchema,
    "rmsprop": RmspropSchema,
    "adagrad": AdagradSchema,
}

# --- learning-rate schedules ---------------------------------------------------------------------

SCHEDULE_UNITS = ["epoch", "step"]


class ConstantScheduleSchema(SpecSchema):
    type = type_field("constant")


class _StepSchedule(SpecSchema):
    # Epochs by default: clients rarely know the steps per epoch, which depend on the data set size.
    unit = Choice(SCHEDULE_UNITS, load_default="epoch")


class ExponentialDecaySchema(_StepSchedule):
    type = type_field("exponential_decay")
    decay_steps = Int(required=True, validate=bounds.STEPS)
    decay_rate = Float(required=True, validate=bounds.EXPONENTIAL_DECAY_RATE)
    staircase = Bool(load_default=False)


class InverseTimeDecaySchema(_StepSchedule):
    type = type_field("inverse_time_decay")
    decay_steps = Int(required=True, validate=bounds.STEPS)
    decay_rate = Float(required=True, validate=bounds.INVERSE_TIME_DECAY_RATE)
    staircase = Bool(load_default=False)


class PiecewiseConstantSchema(_StepSchedule):
    type = type_field("piecewise_constant")
    boundaries = List(Int(validate=bounds.STEPS), required=True, min_length=1, max_length=bounds.MAX_BOUNDARIES)
    values = List(Float(validate=bounds.LEARNING_RATE), required=True, max_length=bounds.MAX_BOUNDARIES + 1)

    @validates_schema
    def _consistent(self, data: dict, **kwargs: Any) -> None:
        boundaries, values = data["boundaries"], data["values"]
        if any(later <= earlier for earlier, later in zip(boundaries, boundaries[1:])):
            raise ValidationError("Must be strictly increasing.", "boundaries")
        if len(values) != len(boundaries) + 1:
            raise ValidationError(
                f"Must hold len(boundaries) + 1 = {len(boundaries) + 1} values; got {len(values)}.",
                "values",
            )


class CosineDecaySchema(_StepSchedule):
    type = type_field("cosine_decay")
    decay_steps = Int(required=True, validate=bounds.STEPS)
    alpha = Float(load_default=0.0, validate=bounds.ALPHA)
    warmup_steps = Int(load_default=0, validate=bounds.WARMUP_STEPS)
    warmup_target = Float(allow_none=True, load_default=None, validate=bounds.LEARNING_RATE)


class PolynomialDecaySchema(_StepSchedule):
    type = type_field("polynomial_decay")
    decay_steps = Int(required=True, validate=bounds.STEPS)
    end_learning_rate = Float(load_default=0.0001, validate=bounds.LEARNING_RATE_FLOOR)
    power = Float(load_default=1.0, validate=bounds.POWER)
    cycle = Bool(load_default=False)


SCHEDULE_SCHEMAS: dict[str, type[SpecSchema]] = {
    "constant": ConstantScheduleSchema,
    "exponential_decay": ExponentialDecaySchema,
    "inverse_time_decay": InverseTimeDecaySchema,
    "piecewise_constant": PiecewiseConstantSchema,
    "cosine_decay": CosineDecaySchema,
    "polynomial_decay": PolynomialDecaySchema,
}

# --- callbacks -------------------------------------------------------------------------------------


def _monitor() -> Str:
    # Which keys exist depends on metrics and validation data: checked and defaulted in checks.py.
    return Str(allow_none=True, load_default=None)


class EarlyStoppingSchema(SpecSchema):
    monitor = _monitor()
    patience = Int(load_default=0, validate=bounds.PATIENCE)
    min_delta = Float(load_default=0.0, validate=bounds.MIN_DELTA)
    mode = Choice(MONITOR_MODES, load_default="auto")
    restore_best_weights = Bool(load_default=False)
    start_from_epoch = Int(load_default=0, validate=bounds.PATIENCE)


class CheckpointSchema(SpecSchema):
    monitor = _monitor()
    mode = Choice(MONITOR_MODES, load_default="auto")


class ReduceLrOnPlateauSchema(SpecSchema):
    monitor = _monitor()
    factor = Float(load_default=0.1, validate=bounds.FACTOR)
    patience = Int(load_default=10, validate=bounds.PATIENCE)
    min_delta = Float(load_default=1e-4, validate=bounds.MIN_DELTA)
    cooldown = Int(load_default=0, validate=bounds.PATIENCE)
    min_lr = Float(load_default=0.0, validate=bounds.LEARNING_RATE_FLOOR)
    # Not in Keras' list of things clients usually set, but Keras' "auto" guesses wrongly for
    # e.g. val_auc here, so the resolved mode is stored like the other callbacks'.
    mode = Choice(MONITOR_MODES, load_default="auto")


class CallbacksSchema(SpecSchema):
    early_stopping = Object(EarlyStoppingSchema, allow_none=True)
    checkpoint = Object(CheckpointSchema)
    reduce_lr_on_plateau = Object(ReduceLrOnPlateauSchema, allow_none=True)

    @pre_load
    def _defaults(self, data: Any, **kwargs: Any) -> Any:
        return _with_defaults(
            data, {"early_stopping": None, "checkpoint": {}, "reduce_lr_on_plateau": None}
        )


# --- the rest ------------------------------------------------------------------------------------


CLASS_WEIGHTS = ("balanced",)


class TrainingSchema(SpecSchema):
    # Upper bounds come from SpecLimits (operator settings) and are checked in checks.py.
    epochs = Int(load_default=10, validate=validate.Range(min=1))
    batch_size = Int(load_default=32, validate=validate.Range(min=1))
    shuffle = Bool(load_default=True)
    seed = Int(allow_none=True, load_default=None, validate=validate.Range(0, SEED_MAX))
    mixed_precision = Bool(load_default=False)
    jit_compile = Bool(load_default=False)
    # "balanced": each class weighted by n_samples / (n_classes * its count) in the training split,
    # through Keras' class_weight. Classification with one class per row only (checks.py).
    class_weight = Choice(CLASS_WEIGHTS, allow_none=True, load_default=None)


class LimitsSchema(SpecSchema):
    max_runtime_seconds = Int(allow_none=True, load_default=None, validate=validate.Range(min=1))


class ResourcesSchema(SpecSchema):
    # null: no preference, any worker (the default queue). 0: CPU. N: N GPUs of one worker, trained under
    # tf.distribute.MirroredStrategy when N > 1. Which classes exist is the operator's (checks.py).
    gpus = Int(allow_none=True, load_default=None, validate=validate.Range(0, 64))


DIAGNOSIS_ACTIONS = ("stop", "continue")


class DiagnosticsSchema(SpecSchema):
    enabled = Bool(load_default=True)
    preflight = Bool(load_default=True)
    # What a confirmed error finding does: end the job (failed, stop_reason "diagnosis") or only flag it.
    on_error = Choice(DIAGNOSIS_ACTIONS, load_default="stop")
    # Before training, sweep the learning rate on a copy of the state and store the curve and a suggested
    # rate in the job's diagnostics (optimizer.learning_rate "auto" runs it and trains at that rate).
    lr_range_test = Bool(load_default=False)


def _check_metrics(values: list[str]) -> None:
    duplicates = sorted(name for name, n in Counter(values).items() if n > 1)
    if duplicates:
        raise ValidationError(f"Each metric may appear once; repeated: {', '.join(duplicates)}.")


MAX_NAME_CHARS = 128


def name_field(**kwargs: Any) -> Str:
    """A job's display name, in the spec and in `PATCH /v1/jobs/{id}` (null: no name)."""
    return Str(
        allow_none=True,
        validate=[
            validate.Length(1, MAX_NAME_CHARS),
            validate.Regexp(
                _NAME_RE,
                error="Must start with a letter or digit and hold only letters, digits, spaces "
                "and . _ - ( ).",
            ),
        ],
        **kwargs,
    )


class JobSpecSchema(SpecSchema):
    version = Int(load_default=1, validate=validate.Equal(1, error="Only version 1 is supported."))
    name = name_field(load_default=None)
    # Metadata, not training input: the worker never reads them. The job's current labels (they change
    # with PATCH) are its top-level `labels`; the stored spec keeps what was submitted.
    labels = Labels(load_default=dict)
    dataset = Object(DatasetSchema, required=True)
    model = Object(ModelSchema, required=True)
    loss = Choice(LOSSES, aliases=LOSS_ALIASES, required=True)
    # Each metric at most once, so no more than there are metrics.
    metrics = List(Choice(METRICS), max_length=len(METRICS), validate=_check_metrics)
    optimizer = Tagged(OPTIMIZER_SCHEMAS)
    schedule = Tagged(SCHEDULE_SCHEMAS)
    callbacks = Object(CallbacksSchema)
    training = Object(TrainingSchema)
    limits = Object(LimitsSchema)
    diagnostics = Object(DiagnosticsSchema)
    resources = Object(ResourcesSchema)

    @pre_load
    def _defaults(self, data: Any, **kwargs: Any) -> Any:
        return _with_defaults(
            data,
            {
                "metrics": [],
                "optimizer": {"type": "adam"},
                "schedule": {"type": "constant"},
                "callbacks": {},
                "training": {},
                "limits": {},
                "diagnostics": {},
                "resources": {},
            },
        )


class JobPatchSchema(SpecSchema):
    """The body of `PATCH /v1/jobs/{id}`: what may change after submission. `labels` is a JSON merge patch
    (RFC 7396) of the job's labels: a key set to null is removed, keys left out are kept."""

    name = name_field()
    labels = Labels(deletable=True)
