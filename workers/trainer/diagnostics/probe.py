"""Measure a model's trainable variables: which layer each belongs to, and probe-batch gradients."""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

# Samples in the probe batch: enough for a stable gradient estimate, small enough to cost one step.
PROBE_SAMPLES = 256
# Calls run eagerly before the function is compiled: tracing costs about as much as 8 eager calls of a
# small model, and most jobs run few epochs.
EAGER_CALLS = 8


@dataclass(frozen=True)
class TrackedVariable:
    layer: str   # the Keras layer name, "<type>_<position>" as build_model names them
    name: str    # the variable's path inside the layer: "kernel", "forward_lstm/lstm_cell/bias"
    shape: tuple[int, ...]
    variable: keras.Variable

    def describe(self) -> dict:
        return {"layer": self.layer, "name": self.name, "shape": list(self.shape)}


def trainable_variables(model: keras.Model) -> list[TrackedVariable]:
    """Every trainable variable once, in layer order, named by its layer."""
    seen: set[int] = set()
    out = []
    for layer in model.layers:
        for v in layer.trainable_weights:
            if id(v) in seen:
                continue
            seen.add(id(v))
            prefix = layer.name + "/"
            name = v.path[len(prefix):] if v.path.startswith(prefix) else v.name
            out.append(TrackedVariable(layer.name, name, tuple(int(d) for d in v.shape), v))
    return out


def probe_batch(x: np.ndarray, y: np.ndarray, samples: int = PROBE_SAMPLES) -> tuple[tf.Tensor, tf.Tensor]:
    """The first ``samples`` training rows: fixed across epochs, and no random draw."""
    n = min(len(x), samples)
    return tf.convert_to_tensor(x[:n]), tf.convert_to_tensor(y[:n])


class ProbeMeasure:
    """One compiled function: gradients on the probe batch and the norms of each variable.

    The forward pass uses ``training=False``: dropout is off and batch normalisation uses (and does not
    update) its moving statistics, so measuring draws nothing from any random stream and changes no
    variable. The gradients are those of the inference-mode loss, which for dropout nets differ a little
    from the training-mode ones; they answer "does this variable get a gradient, and how big" all the
    same.
    """

    def __init__(self, model: keras.Model, loss_fn: keras.losses.Loss,
                 tracked: list[TrackedVariable]) -> None:
        self.model = model
        self.loss_fn = loss_fn
        self.tracked = tracked
        self._variables = [t.variable for t in tracked]
        self._fn = tf.function(self._measure, reduce_retracing=True)
        self._calls = 0

    def snapshot(self) -> list[tf.Tensor]:
        """Copies of the current values (on the variables' device)."""
        return [tf.identity(v.value) for v in self._variables]

    def _measure(self, x, y, before):
        with tf.GradientTape() as tape:
            predictions = self.model(x, training=False)
            loss = self.loss_fn(y, predictions)
            if self.model.losses:  # weight regularisers belong to the objective the optimizer sees
                loss = loss + tf.add_n([tf.cast(l, loss.dtype) for l in self.model.losses])
        grads = tape.gradient(loss, [v.value for v in self._variables],
                              unconnected_gradients=tf.UnconnectedGradients.ZERO)
        rows = []
        for v, g, b in zip(self._variables, grads, before):
            g = tf.cast(tf.convert_to_tensor(g), tf.float32)
            w = tf.cast(v.value, tf.float32)
            rows.append(tf.stack([
                tf.norm(g),
                tf.norm(w),
                tf.norm(w - tf.cast(b, tf.float32)),
                tf.reduce_mean(tf.cast(tf.equal(g, 0.0), tf.float32)),
            ]))
        return loss, tf.stack(rows)

    def measure(self, x, y, before: list[tf.Tensor]) -> tuple[float, list[dict]]:
        """(probe loss, one row per variable with every norm; update_ratio None for a zero weight)."""
        self._calls += 1
        fn = self._measure if self._calls <= EAGER_CALLS else self._fn
        loss, table = fn(x, y, before)
        table = table.numpy().astype(np.float64)
        rows = []
        for t, (grad, weight, update, zero) in zip(self.tracked, table):
            rows.append({
                "layer": t.layer, "name": t.name, "grad_norm": float(grad), "weight_norm": float(weight),
                "update_norm": float(update),
                "update_ratio": float(update / weight) if weight > 0 else None,
                "zero_grad_fraction": float(zero),
            })
        return float(loss), rows
