"""The live line's pieces, without a server: the job's first metric and the time left."""
from __future__ import annotations

import pytest

from client import render


@pytest.mark.parametrize("seconds, text", [
    (0, "0s"), (0.4, "0s"), (44.6, "45s"), (60, "1m00s"), (72, "1m12s"), (3599, "59m59s"), (3600, "1h00m"),
    (7380, "2h03m"), (86400 * 3 + 3600 * 4 + 59, "3d04h"), (-5, "0s"),
])
def test_duration(seconds: float, text: str) -> None:
    assert render.duration(seconds) == text


def test_epoch_line_shows_the_first_metric_and_the_time_left() -> None:
    row = {"epoch": 3, "loss": 0.41234, "val_loss": 0.381, "accuracy": 0.91, "val_accuracy": 0.89, "auc": 0.7,
           "learning_rate": 0.001, "seconds": 1.2}
    job = {"spec": {"metrics": ["accuracy", "auc"]}}
    assert render.epoch_line(row, 20, render.first_metric(job), 72.4) == (
        "epoch 3/20  loss 0.4123  val_loss 0.3810  accuracy 0.9100  val_accuracy 0.8900  lr 1.00e-03  eta 1m12s")
    # No validation split, no metrics, no estimate: only what there is.
    assert render.epoch_line({"epoch": 1, "loss": 0.5, "accuracy": 0.8}, 2, "accuracy") == (
        "epoch 1/2  loss 0.5000  accuracy 0.8000")
    assert render.first_metric({"spec": {"metrics": []}}) is None
    assert render.epoch_line({"epoch": 1, "loss": 0.5}, None, None) == "epoch 1  loss 0.5000"
