"""What the engine needs from diagnostics for one run, built in one place to keep ``train()`` short."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import keras
import numpy as np

from trainyard.names import CLASSIFICATION_LOSSES, canonical_loss

from ..callbacks.state import RunState, call_reporter
from ..losses import build_loss
from .callback import TrainingDiagnostics
from .data_checks import analyze_data
from .data_stats import scale_stats
from .findings import RunContext, analyze_setup, merge, reconcile
from .probe import ProbeMeasure, probe_batch, trainable_variables

logger = logging.getLogger(__name__)


def reports_diagnostics(reporter) -> bool:
    return all(callable(getattr(reporter, m, None)) for m in ("diagnostics", "findings"))


@dataclass
class RunDiagnostics:
    context: RunContext
    enabled: bool
    preflight: bool
    setup_findings: list[dict] = field(default_factory=list)
    callback: TrainingDiagnostics | None = None

    @property
    def variables(self) -> list[dict]:
        return self.context.variables

    @property
    def measure(self) -> ProbeMeasure | None:
        return self.callback.measure if self.callback is not None else None

    def report(self, reporter, findings: list[dict]) -> None:
        if findings and reports_diagnostics(reporter):
            call_reporter(reporter.findings, reconcile(merge(self.setup_findings, findings), self.context),
                          what="findings")

    def confirmed_before_training(self, preflight_findings: list[dict]) -> dict | None:
        """The error finding that stops the job before training (``diagnostics.on_error: "stop"``): an
        error found before the first epoch (data and spec checks, preflight) is confirmed as it is."""
        if not self.enabled or not self.context.stops_on_error:
            return None
        found = reconcile(merge(self.setup_findings, preflight_findings), self.context)
        return next((f for f in found if f["severity"] == "error"), None)


def prepare_diagnostics(spec: dict, model: keras.Model, raw_x: np.ndarray, raw_y: np.ndarray,
                        x_train: np.ndarray, y_train: np.ndarray, reporter, state: RunState, *,
                        integer_inputs: bool, data_report: dict | None = None) -> RunDiagnostics:
    """The run's variable list always; with ``diagnostics.enabled`` the setup findings (data scale from
    the raw, un-normalised training data; the data checks from ``data_report``, what
    ``data_checks.measure_features`` measured on the splits, and from the targets as trained) and the
    measuring callback."""
    options = spec.get("diagnostics") or {}
    tracked = trainable_variables(model)
    batch_size = int((spec.get("training") or {}).get("batch_size") or 1)
    context = RunContext(spec, [t.describe() for t in tracked],
                         steps_per_epoch=max(math.ceil(len(x_train) / batch_size), 1))
    enabled = bool(options.get("enabled", True)) and reports_diagnostics(reporter)
    if options.get("enabled", True) and not enabled:
        logger.warning("the reporter has no diagnostics()/findings(); diagnostics are off")
    run = RunDiagnostics(context, enabled, bool(options.get("preflight", True)))
    if not enabled:
        return run
    stats = scale_stats(raw_x, raw_y, integer_inputs=integer_inputs,
                        classification=canonical_loss(spec.get("loss")) in CLASSIFICATION_LOSSES)
    output_shape = model.outputs[0].shape if model.outputs else None
    units = int(output_shape[-1]) if output_shape is not None and output_shape[-1] is not None else None
    run.setup_findings = analyze_setup(context, stats, units) + analyze_data(data_report, y_train, context, units)
    run.callback = TrainingDiagnostics(
        reporter, state, ProbeMeasure(model, build_loss(spec["loss"]), tracked),
        probe_batch(x_train, y_train), context, setup_findings=run.setup_findings)
    return run
