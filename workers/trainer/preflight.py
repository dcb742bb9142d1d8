"""Preflight: a few training steps on one batch before the real run, to fail fast on hopeless jobs.

A job whose loss is NaN within a few steps, or whose gradients are zero for every trainable variable,
will not get better in hours; it fails at once with a ``diverged`` or ``zero_gradients`` finding.

The steps run on the real model with a separate optimizer built from the same spec, and everything
they touch is put back afterwards: every model variable (weights, batch-norm statistics, the dropout
layers' seed-generator states) and Keras' global seed generator if one exists. They read no data
pipeline and draw from no global random stream, so the real run starts from exactly the weights,
optimizer state and random stream it would have had without preflight.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import keras
import numpy as np
import tensorflow as tf

from .diagnostics.findings import RunContext, check_diverged, zero_gradient_findings
from .diagnostics.probe import trainable_variables
from .losses import build_loss
from .optimizers import build_optimizer

logger = logging.getLogger(__name__)

PREFLIGHT_STEPS = 3


@dataclass
class PreflightResult:
    stop_reason: str | None          # None (go on), "nan_loss" or "no_gradients"
    findings: list[dict] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.stop_reason is None


def _global_seed_state() -> keras.Variable | None:
    # Only look: creating the global seed generator would itself draw from Python's random module.
    from keras.src.backend.common import global_state

    generator = global_state.get_global_attribute("global_seed_generator")
    return getattr(generator, "state", None)


def preflight(model: keras.Model, spec: dict, x: np.ndarray, y: np.ndarray, *, steps_per_epoch: int,
              context: RunContext, steps: int = PREFLIGHT_STEPS) -> PreflightResult:
    """Train ``steps`` steps on the first batch of (x, y), then restore the model's every variable."""
    began = time.perf_counter()
    batch = int(spec["training"]["batch_size"])
    xb, yb = tf.convert_to_tensor(x[:batch]), tf.convert_to_tensor(y[:batch])
    tracked = trainable_variables(model)
    variables = [t.variable for t in tracked]
    seed_state = _global_seed_state()
    saved = [v.numpy() for v in model.variables]
    saved_seed = seed_state.numpy() if seed_state is not None else None
    # A separate optimizer: the real one stays unbuilt, with no slots and iterations == 0.
    optimizer = build_optimizer(spec["optimizer"], spec.get("schedule") or {"type": "constant"},
                                steps_per_epoch)
    loss_fn = build_loss(spec["loss"])
    result = PreflightResult(stop_reason=None)
    try:
        for step in range(1, steps + 1):
            with tf.GradientTape() as tape:
                predictions = model(xb, training=True)
                loss = loss_fn(yb, predictions)
                if model.losses:
                    loss = loss + tf.add_n([tf.cast(l, loss.dtype) for l in model.losses])
            value = float(loss)
            result.losses.append(value)
            if not math.isfinite(value):
                lr = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
                result.stop_reason = "nan_loss"
                result.findings = check_diverged([], context, nan={
                    "epoch": None, "preflight": True, "step": step, "learning_rate": lr,
                    "preflight_losses": result.losses})
                break
            grads = tape.gradient(loss, [v.value for v in variables],
                                  unconnected_gradients=tf.UnconnectedGradients.ZERO)
            if step == 1:
                record = {"epoch": None, "variables": [
                    {"layer": t.layer, "name": t.name, "grad_norm": float(tf.norm(g)),
                     "zero_grad_fraction": float(tf.reduce_mean(tf.cast(tf.equal(g, 0), tf.float32)))}
                    for t, g in zip(tracked, grads)]}
                if record["variables"] and all(v["zero_grad_fraction"] == 1.0
                                               for v in record["variables"]):
                    result.stop_reason = "no_gradients"
                    result.findings = zero_gradient_findings(record, context, severity="error")
                    break
            optimizer.apply_gradients(zip(grads, variables))
    finally:
        for v, value in zip(model.variables, saved):
            v.assign(value)
        if seed_state is not None:
            seed_state.assign(saved_seed)
    result.seconds = time.perf_counter() - began
    logger.info("preflight: %s after %d step(s), losses %s, %.3f s", result.stop_reason or "ok",
                len(result.losses), result.losses, result.seconds)
    return result
