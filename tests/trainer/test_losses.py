import keras
import numpy as np
import pytest
from keras.src.trainers import compile_utils

from trainyard import names
from trainyard.spec import LOSSES, METRICS, metric_keras_class
from workers.trainer.diagnostics import findings
from workers.trainer.losses import build_loss, build_metric, build_metrics

LOSS_NAMES = names.LOSSES + list(names.LOSS_ALIASES)


@pytest.mark.parametrize("loss, cls", [
    ("sparse_categorical_crossentropy", keras.metrics.SparseCategoricalAccuracy),
    ("categorical_crossentropy", keras.metrics.CategoricalAccuracy),
    ("binary_crossentropy", keras.metrics.BinaryAccuracy),
])
def test_accuracy_follows_the_loss_and_keeps_the_users_name(loss, cls):
    metric = build_metric("accuracy", loss)
    assert type(metric) is cls and metric.name == "accuracy"


@pytest.mark.parametrize("name, cls", [
    ("auc", keras.metrics.AUC), ("rmse", keras.metrics.RootMeanSquaredError),
    ("mae", keras.metrics.MeanAbsoluteError), ("mse", keras.metrics.MeanSquaredError),
    ("mape", keras.metrics.MeanAbsolutePercentageError), ("precision", keras.metrics.Precision),
    ("recall", keras.metrics.Recall),
])
def test_named_metrics(name, cls):
    metric = build_metric(name, "mse")
    assert type(metric) is cls and metric.name == name


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_every_loss_name_builds_the_keras_loss_it_names(name):
    loss = build_loss(name)
    canonical = names.canonical_loss(name)
    assert type(loss).__name__ == names.LOSS_KERAS_CLASSES[canonical]
    # Keras' own registry agrees on what the name means (its string form gives the function behind the class).
    assert loss.fn is keras.losses.get(canonical)


def test_refusals():
    with pytest.raises(ValueError, match="unknown loss"):
        build_loss("my_module.custom_loss")
    with pytest.raises(ValueError, match="unknown metric"):
        build_metric("f1_custom", "mse")
    with pytest.raises(ValueError, match="unique"):
        build_metrics(["mae", "mae"], "mse")


def test_the_engine_maps_exactly_what_the_spec_offers():
    # The engine used to map `categorical_hinge` (and metrics such as top_k_categorical_accuracy) that no
    # spec can name, and to read its own table of which losses take class labels: one catalogue now.
    for name in LOSS_NAMES:
        build_loss(name)
    with pytest.raises(ValueError, match="unknown loss"):
        build_loss("categorical_hinge")
    for refused in ("top_k_categorical_accuracy", "root_mean_squared_error", "mean_squared_error"):
        with pytest.raises(ValueError, match="unknown metric"):
            build_metric(refused, "mean_squared_error")
    # Diagnostics read the same sets as validation: no loss the spec refuses, none it offers left out.
    assert findings.CLASSIFICATION_LOSSES is names.CLASSIFICATION_LOSSES
    assert findings.REGRESSION_LOSSES is names.REGRESSION_LOSSES
    assert names.CLASSIFICATION_LOSSES | names.REGRESSION_LOSSES <= set(names.LOSSES)


@pytest.mark.parametrize("loss", LOSSES)
def test_every_metric_is_the_class_the_contract_names_for_every_loss(loss):
    # Validation decides which pairs are accepted and documents the class (trainyard.names); the engine
    # must build that class, never refuse a pair validation let through.
    for name in METRICS:
        assert type(build_metric(name, loss)).__name__ == metric_keras_class(name, loss), (name, loss)


# The labels each loss that scores classes takes, as Keras 3 defines the loss: integer class ids, one-hot
# rows, or one 0/1 column. (Keras' categorical_hinge takes one-hot rows like categorical_crossentropy.)
_CLASS_LABELS = {
    "sparse_categorical_crossentropy": (3, lambda y: y),
    "categorical_crossentropy": (3, lambda y: keras.utils.to_categorical(y, 3)),
    "kl_divergence": (3, lambda y: keras.utils.to_categorical(y, 3)),
    "binary_crossentropy": (1, lambda y: (y[:, None] > 0).astype("float32")),
    "hinge": (1, lambda y: (y[:, None] > 0).astype("float32")),
    "squared_hinge": (1, lambda y: (y[:, None] > 0).astype("float32")),
}


def test_every_loss_has_an_accuracy_class_and_every_class_loss_its_labels():
    assert set(names.ACCURACY_KERAS_CLASSES) == set(names.LOSSES)
    assert set(_CLASS_LABELS) == set(names.CLASSIFICATION_LOSSES) | {
        loss for loss, cls in names.ACCURACY_KERAS_CLASSES.items() if cls != "BinaryAccuracy"}


@pytest.mark.parametrize("loss", sorted(_CLASS_LABELS))
def test_accuracy_is_what_keras_compile_resolves_for_the_losss_labels(loss):
    units, encode = _CLASS_LABELS[loss]
    y = encode(np.random.default_rng(0).integers(0, 3, size=8))
    y_pred = keras.ops.full((8, units), 0.5)
    # What `model.compile(loss=loss, metrics=["accuracy"])` calls once it sees the labels: Keras 3 picks the
    # accuracy class from their shape, not from the loss's name.
    resolved = compile_utils.get_metric("accuracy", keras.ops.convert_to_tensor(y), y_pred)
    assert type(resolved).__name__ == names.metric_keras_class("accuracy", loss)
    assert type(resolved) is type(build_metric("accuracy", loss))
    # ... and the loss takes those labels.
    assert np.isfinite(float(build_loss(loss)(y, y_pred)))


def test_keras_categorical_hinge_would_score_as_categorical_accuracy():
    # The spec does not offer categorical_hinge; the engine mapped it and its accuracy to CategoricalAccuracy
    # while the spec's rule fell back to BinaryAccuracy. Keras 3 sides with the engine: the loss takes one-hot
    # rows, and accuracy on one-hot rows is categorical. Should the spec ever offer it, its entry is this.
    y = keras.utils.to_categorical(np.arange(8) % 3, 3)
    y_pred = keras.ops.full((8, 3), 0.5)
    assert np.isfinite(float(keras.losses.CategoricalHinge()(y, y_pred)))
    assert type(compile_utils.get_metric("accuracy", keras.ops.convert_to_tensor(y), y_pred)) \
        is keras.metrics.CategoricalAccuracy
    assert "categorical_hinge" not in names.LOSSES and "categorical_hinge" not in names.ACCURACY_KERAS_CLASSES
