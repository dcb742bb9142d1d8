"""The v1 job spec: schema, defaults, cross-field checks, shape and parameter inference.

Imports only marshmallow and the standard library, so the API validates specs (including whether a
model's layers connect and how many parameters it has) without importing TensorFlow.
"""
from trainyard.spec.catalog import (
    BUILTIN_DATASETS,
    BUILTIN_TEST_FRACTION,
    DatasetInfo,
    DatasetLookup,
    builtin_train_samples,
)
from trainyard.spec.checks import steps_per_epoch
from trainyard.spec.errors import SpecError
from trainyard.spec.layers import LAYER_TYPES, LayerShape, count_params, infer_shapes
from trainyard.spec.limits import SpecLimits
from trainyard.names import (
    ACTIVATIONS,
    INITIALIZERS,
    LOSSES,
    METRICS,
    metric_keras_class,
    metric_log_name,
    monitor_mode,
)
from trainyard.spec.validate import validate_job_patch, validate_spec

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
    "validate_job_patch",
    "validate_spec",
]
