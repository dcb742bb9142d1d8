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

    def _loss_and_gradients(self, x, y):
        with tf.GradientTape() as tape:
            predictions = self.model(x, training=False)
            loss = self.loss_fn(y, predictions)
            if self.model.losses:  # weight regularisers belong to the objective the optimizer sees
                loss = loss + tf.add_n([tf.cast(l, loss.dtype) for l in self.model.losses])
        grads = tape.gradient(loss, [v.value for v in self._variables],
                              unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return loss, [tf.convert_to_tensor(g) for g in grads]  # embedding gradients come as slices

    def _measure(self, x, y, before):
        """The compiled form: norms on the variables' device, one small table back to the host."""
        loss, grads = self._loss_and_gradients(x, y)
        rows = []
        for v, g, b in zip(self._variables, grads, before):
            g = tf.cast(g, tf.float32)
            w = tf.cast(v.value, tf.float32)
            rows.append(tf.stack([
                tf.norm(g),
                tf.norm(w),
                tf.norm(w - tf.cast(b, tf.float32)),
                tf.reduce_mean(tf.cast(tf.equal(g, 0.0), tf.float32)),
            ]))
        return loss, tf.stack(rows)

    def _measure_eagerly(self, x, y, before):
        """The eager form: the same numbers, with the norms taken by NumPy on the host, which costs a
        fraction of a dozen eager TensorFlow ops per variable."""
        loss, grads = self._loss_and_gradients(x, y)
        table = np.empty((len(grads), 4), dtype=np.float64)
        for row, (v, g, b) in enumerate(zip(self._variables, grads, before)):
            g = np.asarray(g).astype(np.float32, copy=False).ravel()
            w = np.asarray(v.value).astype(np.float32, copy=False).ravel()
            b = np.asarray(b).astype(np.float32, copy=False).ravel()
            table[row] = (np.linalg.norm(g), np.linalg.norm(w), np.linalg.norm(w - b),
                          np.count_nonzero(g == 0.0) / g.size if g.size else 0.0)
        return loss, table

    def measure(self, x, y, before: list[tf.Tensor]) -> tuple[float, list[dict]]:
        """(probe loss, one row per variable with every norm; update_ratio None for a zero weight)."""
        self._calls += 1
        if self._calls <= EAGER_CALLS:
            loss, table = self._measure_eagerly(x, y, before)
        else:
            loss, table = self._fn(x, y, before)
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
