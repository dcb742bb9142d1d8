"""Allow-lists of the Keras names a spec may use, and the aliases we normalise.

A spec never names a Python object: every string that ends up selecting Keras behaviour is checked
against one of these lists, so the trainer can hand it to `keras.activations.get` and friends without
ever reaching deserialization of anything a client chose.
"""
from __future__ import annotations

ACTIVATIONS: list[str] = [
    "relu", "sigmoid", "tanh", "softmax", "linear", "elu", "selu", "gelu", "silu", "swish",
    "softplus", "softsign", "leaky_relu", "relu6", "exponential", "hard_sigmoid", "mish",
    "log_softmax",
]
# Keras 3 registers `swish` as an alias of `silu`; one canonical name keeps "final activation" checks
# and stored specs simple.
ACTIVATION_ALIASES: dict[str, str] = {"swish": "silu"}

INITIALIZERS: list[str] = [
    "glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "lecun_uniform", "lecun_normal",
    "zeros", "ones", "random_uniform", "random_normal", "truncated_normal", "orthogonal",
]

LOSSES: list[str] = [
    "binary_crossentropy", "categorical_crossentropy", "sparse_categorical_crossentropy",
    "mean_squared_error", "mean_absolute_error", "huber", "log_cosh",
    "mean_absolute_percentage_error", "mean_squared_logarithmic_error", "hinge", "squared_hinge",
    "kl_divergence", "poisson",
]
LOSS_ALIASES: dict[str, str] = {
    "mse": "mean_squared_error",
    "mae": "mean_absolute_error",
    "mape": "mean_absolute_percentage_error",
    "msle": "mean_squared_logarithmic_error",
}
CROSSENTROPY_LOSSES = frozenset(
    {"binary_crossentropy", "categorical_crossentropy", "sparse_categorical_crossentropy"}
)
# Losses that only make sense with class labels; a regression data set cannot use them.
CLASSIFICATION_LOSSES = CROSSENTROPY_LOSSES | {"hinge", "squared_hinge"}

#: Metric names a spec may use. The name is also the log key (`accuracy`, `val_accuracy`): the trainer
#: builds the Keras metric object from `METRIC_KERAS_CLASSES` and passes `name=<the spec's name>`.
METRICS: list[str] = [
    "accuracy", "binary_accuracy", "categorical_accuracy", "sparse_categorical_accuracy",
    "auc", "precision", "recall", "mae", "mse", "rmse", "mape",
]
#: Class names in `keras.metrics`. `accuracy` is resolved from the loss by `metric_keras_class`.
METRIC_KERAS_CLASSES: dict[str, str] = {
    "binary_accuracy": "BinaryAccuracy",
    "categorical_accuracy": "CategoricalAccuracy",
    "sparse_categorical_accuracy": "SparseCategoricalAccuracy",
    "auc": "AUC",
    "precision": "Precision",
    "recall": "Recall",
    "mae": "MeanAbsoluteError",
    "mse": "MeanSquaredError",
    "rmse": "RootMeanSquaredError",
    "mape": "MeanAbsolutePercentageError",
}
# Metrics that score class predictions; meaningless on a regression data set.
CLASSIFICATION_METRICS = frozenset(
    {"accuracy", "binary_accuracy", "categorical_accuracy", "sparse_categorical_accuracy",
     "auc", "precision", "recall"}
)
# Metrics where bigger is better; Keras' own "auto" mode guesses from the name and gets `val_auc`
# wrong in ReduceLROnPlateau, so we resolve modes ourselves and store them.
_MAXIMISED_METRICS = frozenset(CLASSIFICATION_METRICS)


def metric_log_name(name: str) -> str:
    """The key under which a metric appears in epoch logs: exactly the spec's name (`val_` + it for
    validation). The trainer guarantees this by constructing every metric with `name=name`."""
    return name


def metric_keras_class(name: str, loss: str) -> str:
    """The `keras.metrics` class name for a spec metric; `accuracy` follows the loss the way
    `model.compile(metrics=["accuracy"])` would resolve it."""
    if name == "accuracy":
        if loss == "sparse_categorical_crossentropy":
            return "SparseCategoricalAccuracy"
        if loss in ("categorical_crossentropy", "kl_divergence"):
            return "CategoricalAccuracy"
        return "BinaryAccuracy"
    return METRIC_KERAS_CLASSES[name]


def monitor_mode(monitor: str) -> str:
    """Resolve `mode: "auto"` for a monitored log key: "max" for accuracy-like metrics, else "min"."""
    base = monitor[4:] if monitor.startswith("val_") else monitor
    return "max" if base in _MAXIMISED_METRICS else "min"
