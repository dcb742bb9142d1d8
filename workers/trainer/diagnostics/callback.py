"""Per-epoch training dynamics of every trainable variable, and the findings they lead to."""

from __future__ import annotations

import json
import logging
import math
import time

import keras

from trainyard.stop_reasons import StopReason

from ..callbacks.reporting import current_learning_rate
from ..callbacks.state import RunState, call_reporter
from .findings import RunContext, analyze_epochs, merge, reconcile
from .probe import ProbeMeasure, TrackedVariable

logger = logging.getLogger(__name__)


class TrainingDiagnostics(keras.callbacks.Callback):
    """After each complete epoch: measure gradient, weight and update norms on a fixed probe batch,
    report them with ``reporter.diagnostics(epoch, record)``, and report the findings so far with
    ``reporter.findings(items)``.

    Costs one forward and backward pass on the probe batch and a copy of the trainable weights per
    epoch. Nothing here writes to a model or optimizer variable or draws a random number, so a run with
    diagnostics trains exactly like one without (see ``ProbeMeasure``).

    ``setup_findings`` (data scale, loss/activation) are reported with every epoch's so the reporter
    always receives the whole current list, made one coherent recommendation (``findings.reconcile``).

    With ``diagnostics.on_error: "stop"`` (the default) an error finding confirmed on two consecutive
    epochs (the same id in both epochs' findings) stops the run after the second: stop reason
    ``diagnosis``, and ``stopped_by`` is that finding. The epoch is complete, so it is reported and
    checkpointed first (this callback runs after the checkpoint).
    """

    def __init__(self, reporter, state: RunState, measure: ProbeMeasure, probe: tuple, context: RunContext,
                 *, setup_findings: list[dict] | None = None) -> None:
        super().__init__()
        for method in ("diagnostics", "findings"):
            if not callable(getattr(reporter, method, None)):
                raise TypeError(f"reporter must have a {method}() method")
        if not isinstance(state, RunState):
            raise TypeError("state must be a RunState")
        if not isinstance(measure, ProbeMeasure):
            raise TypeError("measure must be a ProbeMeasure")
        self._reporter = reporter
        self._state = state
        self._measure = measure
        self._probe = probe
        self._context = context
        self._setup = list(setup_findings or [])
        self._before = None
        self._learning_rate: float | None = None
        self._epoch = 0
        self._last_sent: str | None = None
        self.history: list[dict] = []
        self._raised: list[dict] = list(self._setup)  # every finding so far, as its rule raised it
        self.findings: list[dict] = reconcile(self._raised, context)
        # Ids of the error findings of the last complete epoch: one still there an epoch later is confirmed.
        self._previous_errors: set[str] = set()
        self.stopped_by: dict | None = None
        self.seconds = 0.0

    def continue_from(self, history: list[dict], epoch: int) -> None:
        """A resumed run: take the earlier attempts' records of epochs 1..``epoch`` as this run's history."""
        self.history = sorted((dict(r) for r in history if 1 <= int(r["epoch"]) <= epoch),
                              key=lambda r: r["epoch"])
        if self.history:
            self._previous_errors = _error_ids(analyze_epochs(self.history, self._context))

    def stop_confirmed_in_history(self) -> bool:
        """A resumed run whose backup was taken as this callback stopped the run (its last two epochs
        share an error finding): request that stop again, as fit will run no epoch to find it."""
        if len(self.history) < 2 or not self._context.stops_on_error:
            return False
        confirmed = self._previous_errors & _error_ids(analyze_epochs(self.history[:-1], self._context))
        if not confirmed:
            return False
        self._report(analyze_epochs(self.history, self._context))
        self.stopped_by = next(f for f in self.findings if f["id"] in confirmed)
        self._state.request_stop(StopReason.DIAGNOSIS, partial=False)
        return True

    @property
    def tracked(self) -> list[TrackedVariable]:
        return self._measure.tracked

    @property
    def measure(self) -> ProbeMeasure:
        return self._measure

    def on_epoch_begin(self, epoch, logs=None):
        began = time.perf_counter()
        self._epoch = epoch + 1
        self._learning_rate = current_learning_rate(self.model.optimizer)
        self._before = self._measure.snapshot()
        self.seconds += time.perf_counter() - began

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self._state.partial_epoch or self._before is None:
            return
        began = time.perf_counter()
        try:
            _, variables = self._measure.measure(*self._probe, self._before)
        except Exception:  # a measurement must never end a run
            logger.exception("measuring epoch %d's diagnostics failed; training continues", epoch + 1)
            return
        finally:
            self._before = None
        record = {"learning_rate": self._learning_rate, "loss": _finite(logs.get("loss")),
                  "variables": variables}
        self.history.append({"epoch": epoch + 1, **record, "val_loss": _finite(logs.get("val_loss"))})
        call_reporter(self._reporter.diagnostics, epoch + 1, record, what=f"diagnostics({epoch + 1})")
        epoch_findings = analyze_epochs(self.history, self._context)
        self._report(epoch_findings)
        errors = _error_ids(epoch_findings)
        confirmed = errors & self._previous_errors
        self._previous_errors = errors
        if confirmed and self._context.stops_on_error and self._state.stop_reason is None:
            self.stopped_by = next(f for f in self.findings if f["id"] in confirmed)
            logger.info("stopping: error finding %s confirmed on epochs %d and %d (diagnostics.on_error stop)",
                        self.stopped_by["id"], epoch, epoch + 1)
            self._state.request_stop(StopReason.DIAGNOSIS, partial=False)
            self.model.stop_training = True
        self.seconds += time.perf_counter() - began

    def on_train_end(self, logs=None):
        if self._state.stop_reason == StopReason.NAN_LOSS:
            nan = {"epoch": self._epoch, "learning_rate": self._learning_rate}
            self._report(analyze_epochs(self.history, self._context, nan=nan))

    def _report(self, epoch_findings: list[dict]) -> None:
        # Findings already raised stay (the reporter upserts by id: code and layer); re-send only on change.
        self._raised = merge(self._raised, epoch_findings)
        self.findings = reconcile(self._raised, self._context)
        payload = json.dumps(self.findings, sort_keys=True, default=str)
        if payload == self._last_sent:
            return
        if call_reporter(self._reporter.findings, list(self.findings), what="findings"):
            self._last_sent = payload


def _error_ids(findings: list[dict]) -> set[str]:
    return {f["id"] for f in findings if f["severity"] == "error"}


def _finite(value) -> float | None:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None
