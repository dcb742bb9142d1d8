"""Preflight: a few training steps on one batch before the real run, to fail fast on hopeless jobs.

A job whose loss is NaN within a few steps, or whose gradients are zero for every trainable variable,
will not get better in hours; it fails at once with a ``diverged`` or ``zero_gradients`` finding.

The steps run through the compiled model's own ``fit`` on a one-batch data set, so they use (and trace)
the very train function the real run uses: the real run's first epoch then skips the tracing it would
have paid anyway, and preflight costs a few steps, not a second compilation. Gradients are measured only
when the steps moved no trainable variable (or the optimizer decays weights, which moves them without
gradients).
Everything they touch is put back afterwards: every model variable (weights, batch-norm statistics,
the dropout layers' seed-generator states), every optimizer variable (built here exactly as fit would
build it: iteration counter, slots, loss scale) and Keras' global seed generator if one exists. They
draw from no global random stream, so the real run starts from exactly the weights, optimizer state and
random stream it would have had without preflight.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import keras

from trainyard.stop_reasons import StopReason
import numpy as np
import tensorflow as tf

from .data import make_dataset
from .diagnostics.findings import RunContext, check_diverged, zero_gradient_findings
from .diagnostics.probe import ProbeMeasure, trainable_variables
from .losses import build_loss

logger = logging.getLogger(__name__)

PREFLIGHT_STEPS = 3


@dataclass
class PreflightResult:
    stop_reason: str | None          # None (go on), StopReason.NAN_LOSS or StopReason.NO_GRADIENTS
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


class _StepLosses(keras.callbacks.Callback):
    """Each preflight step is a one-step epoch, so each epoch's loss is that step's loss."""

    def __init__(self) -> None:
        super().__init__()
        self.losses: list[float] = []

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        value = float(logs.get("loss", float("nan")))
        self.losses.append(value)
        if not math.isfinite(value):
            self.model.stop_training = True


def preflight(model: keras.Model, spec: dict, x: np.ndarray, y: np.ndarray, *, context: RunContext,
              steps: int = PREFLIGHT_STEPS, measure: ProbeMeasure | None = None,
              class_weight: dict[int, float] | None = None) -> PreflightResult:
    """Train ``steps`` steps on the first batch of (x, y) with the compiled ``model``, then restore every
    variable of the model and its optimizer. Gradients are measured (with ``measure``, the run's
    diagnostics probe, if any) only when the steps moved no trainable variable: a step that changed a
    weight had a gradient, so the common case pays no measurement. An optimizer with weight decay moves
    weights without gradients, so there the measurement comes first. ``class_weight`` is the run's own
    (``training.class_weight``): it adds sample weights to the batches, so fit's trace depends on it.
    """
    began = time.perf_counter()
    batch = int(spec["training"]["batch_size"])
    xb, yb = x[:batch], y[:batch]
    if measure is None:
        measure = ProbeMeasure(model, build_loss(spec["loss"]), trainable_variables(model))
    optimizer = model.optimizer
    if not optimizer.built:  # as fit would: same variables, same initial values
        optimizer.build(model.trainable_variables)
    lr = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
    seed_state = _global_seed_state()
    saved = [v.numpy() for v in model.variables]
    saved_optimizer = [v.numpy() for v in optimizer.variables]
    saved_seed = seed_state.numpy() if seed_state is not None else None
    result = PreflightResult(stop_reason=None)

    def check_gradients() -> None:
        loss, rows = measure.measure(tf.convert_to_tensor(xb), tf.convert_to_tensor(yb), measure.snapshot())
        if not math.isfinite(loss):
            result.losses.append(loss)
            result.stop_reason = StopReason.NAN_LOSS
        elif rows and all(r["zero_grad_fraction"] == 1.0 for r in rows):
            record = {"epoch": None, "variables": [
                {k: r[k] for k in ("layer", "name", "grad_norm", "zero_grad_fraction")} for r in rows]}
            result.stop_reason = StopReason.NO_GRADIENTS
            result.findings = zero_gradient_findings(record, context, severity="error")

    measure_first = bool(getattr(optimizer, "weight_decay", None))
    moved = True
    try:
        if measure_first:
            check_gradients()
        if result.stop_reason is None:
            # The same data pipeline as the real run (element spec included): fit reuses the trace.
            recorder = _StepLosses()
            model.fit(make_dataset(xb, yb, batch).repeat(), epochs=steps, steps_per_epoch=1, verbose=0,
                      callbacks=[recorder], shuffle=False, class_weight=class_weight)
            result.losses = recorder.losses
            if result.losses and not math.isfinite(result.losses[-1]):
                result.stop_reason = StopReason.NAN_LOSS
            trainable = {id(v) for v in model.trainable_variables}
            moved = any(not np.array_equal(v.numpy(), value)
                        for v, value in zip(model.variables, saved) if id(v) in trainable)
    finally:
        for v, value in zip(model.variables, saved):
            v.assign(value)
        for v, value in zip(optimizer.variables, saved_optimizer):
            v.assign(value)
        if seed_state is not None:
            seed_state.assign(saved_seed)
        model.reset_metrics()
    if result.stop_reason is None and not moved and not measure_first:
        check_gradients()  # on the restored weights; measuring writes no variable
    if result.stop_reason == StopReason.NAN_LOSS:
        result.findings = check_diverged([], context, nan={
            "epoch": None, "preflight": True, "step": len(result.losses), "learning_rate": lr,
            "preflight_losses": result.losses})
    result.seconds = time.perf_counter() - began
    logger.info("preflight: %s after %d step(s), losses %s, %.3f s", result.stop_reason or "ok",
                len(result.losses), result.losses, result.seconds)
    return result
