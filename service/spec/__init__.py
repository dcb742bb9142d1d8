"""The v1 job spec: schema, defaults, cross-field checks, shape and parameter inference.

Imports only marshmallow and the standard library, so the API validates specs (including whether a
model's layers connect and how many parameters it has) without importing TensorFlow.
"""
from service.spec.catalog import (
    BUILTIN_DATASETS,
    BUILTIN_TEST_FRACTION,
    DatasetInfo,
    DatasetLookup,
    builtin_train_samples,
)
from service.spec.checks import steps_per_epoch
from service.spec.errors import SpecError
from service.spec.layers import LAYER_TYPES, LayerShape, count_params, infer_shapes
from service.spec.limits import SpecLimits
from service.spec.names import (
    ACTIVATIONS,
    INITIALIZERS,
    LOSSES,
    METRICS,
    metric_keras_class,
    metric_log_name,
    monitor_mode,
)
from service.spec.validate import validate_spec

__all__ = [
    "ACTIVATIONS",
    "BUILTIN_DATASETS",
    "BUILTIN_TEST_FRACTION",
    "INITIALIZERS",
    "LAYER_TYPES",
    "LOSSES",
    "METRICS",
    "DatasetInfo",
    "DatasetLookup",
    "LayerShape",
    "SpecError",
    "SpecLimits",
    "builtin_train_samples",
    "count_params",
    "infer_shapes",
    "metric_keras_class",
    "metric_log_name",
    "monitor_mode",
    "steps_per_epoch",
    "validate_spec",
]
