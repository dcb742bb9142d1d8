import keras
import pytest

from trainyard.spec import LOSSES, METRICS, metric_keras_class
from workers.trainer.losses import LOSS_NAMES, build_loss, build_metric, build_metrics


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


def test_every_loss_name_builds_a_keras_loss():
    for name in LOSS_NAMES:
        assert isinstance(build_loss(name), keras.losses.Loss)


def test_refusals():
    with pytest.raises(ValueError, match="unknown loss"):
        build_loss("my_module.custom_loss")
    with pytest.raises(ValueError, match="unknown metric"):
        build_metric("f1_custom", "mse")
    with pytest.raises(ValueError, match="unique"):
        build_metrics(["mae", "mae"], "mse")


@pytest.mark.parametrize("loss", LOSSES)
def test_every_metric_is_the_class_the_contract_names_for_every_loss(loss):
    # Validation decides which pairs are accepted and documents the class (trainyard.spec.names); the engine
    # must build that class, never refuse a pair validation let through.
    for name in METRICS:
        assert type(build_metric(name, loss)).__name__ == metric_keras_class(name, loss), (name, loss)
    assert set(LOSSES) <= set(LOSS_NAMES)
