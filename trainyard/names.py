"""The one catalogue of Keras names: what a spec may name, and what each name means to the engine.

Standard library only: the API validates specs against it without importing TensorFlow, and the trainer
(`workers.trainer`, pure Keras) builds its losses and metrics from it; nothing else of `trainyard` is
imported by the trainer (tests/service/test_layering.py). A spec never names a Python object: every
string that ends up selecting Keras behaviour is checked against one of these lists, so the trainer can
hand it to `keras.activations.get` and friends, or look its class up here, without ever reaching
deserialization of anything a client chose.
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

#: Loss names a spec may use, each with the `keras.losses` class the engine builds for it.
LOSS_KERAS_CLASSES: dict[str, str] = {
    "binary_crossentropy": "BinaryCrossentropy",
    "categorical_crossentropy": "CategoricalCrossentropy",
    "sparse_categorical_crossentropy": "SparseCategoricalCrossentropy",
    "mean_squared_error": "MeanSquaredError",
    "mean_absolute_error": "MeanAbsoluteError",
    "huber": "Huber",
    "log_cosh": "LogCosh",
    "mean_absolute_percentage_error": "MeanAbsolutePercentageError",
    "mean_squared_logarithmic_error": "MeanSquaredLogarithmicError",
    "hinge": "Hinge",
    "squared_hinge": "SquaredHinge",
    "kl_divergence": "KLDivergence",
    "poisson": "Poisson",
}
LOSSES: list[str] = list(LOSS_KERAS_CLASSES)
#: Accepted in a spec and stored by their full names.
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
# Losses of a real-valued target (diagnostics check their targets' scale and final activation).
REGRESSION_LOSSES = frozenset({
    "mean_squared_error", "mean_absolute_error", "mean_absolute_percentage_error",
    "mean_squared_logarithmic_error", "huber", "log_cosh",
})

#: The `keras.metrics` class `accuracy` means with each loss: the one matching the labels the loss takes,
#: which is what `model.compile(metrics=["accuracy"])` resolves from those labels in Keras 3 (integer class
#: ids: sparse; one-hot rows: categorical; one 0/1 column: binary). With a loss that takes no class labels
#: (mse on one-hot class targets, which validation accepts) the outputs are scored one by one, as binary
#: accuracy. Every loss is listed (tests/spec/test_names.py): there is no fallback to guess wrong.
#: (Keras' `categorical_hinge` takes one-hot rows, so it would be CategoricalAccuracy; the spec does not
#: offer it.)
ACCURACY_KERAS_CLASSES: dict[str, str] = {
    "sparse_categorical_crossentropy": "SparseCategoricalAccuracy",
    "categorical_crossentropy": "CategoricalAccuracy",
    "kl_divergence": "CategoricalAccuracy",
    "binary_crossentropy": "BinaryAccuracy",
    "hinge": "BinaryAccuracy",
    "squared_hinge": "BinaryAccuracy",
    "mean_squared_error": "BinaryAccuracy",
    "mean_absolute_error": "BinaryAccuracy",
    "huber": "BinaryAccuracy",
    "log_cosh": "BinaryAccuracy",
    "mean_absolute_percentage_error": "BinaryAccuracy",
    "mean_squared_logarithmic_error": "BinaryAccuracy",
    "poisson": "BinaryAccuracy",
}

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


def canonical_loss(name: str) -> str:
    """The full name of a loss (`mse` -> `mean_squared_error`); other names unchanged."""
    return LOSS_ALIASES.get(name, name)


def metric_log_name(name: str) -> str:
    """The key under which a metric appears in epoch logs: exactly the spec's name (`val_` + it for
    validation). The trainer guarantees this by constructing every metric with `name=name`."""
    return name


def metric_keras_class(name: str, loss: str) -> str:
    """The `keras.metrics` class name for a spec metric; `accuracy` follows the loss
    (`ACCURACY_KERAS_CLASSES`). A name outside the catalogue raises KeyError."""
    if name == "accuracy":
        return ACCURACY_KERAS_CLASSES[canonical_loss(loss)]
    return METRIC_KERAS_CLASSES[name]


def monitor_mode(monitor: str) -> str:
    """Resolve `mode: "auto"` for a monitored log key: "max" for accuracy-like metrics, else "min"."""
    base = monitor[4:] if monitor.startswith("val_") else monitor
    return "max" if base in _MAXIMISED_METRICS else "min"

#: What `optimizer.learning_rate` may hold instead of a number: the learning-rate range test run before
#: training picks the rate (workers/trainer/diagnostics/lr_range.py), and the job shows it as
#: `optimizer.learning_rate_chosen`.
LEARNING_RATE_AUTO = "auto"

#: The exports a worker makes of a job's best checkpoint when the job succeeds, cheapest first: models on
#: raw inputs (workers/trainer/export.py). TRAINYARD_EXPORT_FORMATS picks among them.
EXPORT_FORMATS: tuple[str, ...] = ("savedmodel", "keras-serving", "onnx")
