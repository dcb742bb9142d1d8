"""``train(spec, data, reporter, workdir)``: build, compile, callbacks, preflight, fit, evaluate, result."""

from __future__ import annotations

import copy
import logging
import math
import tempfile
import time
from pathlib import Path

import keras
import numpy as np

from trainyard.names import LEARNING_RATE_AUTO
from trainyard.stop_reasons import StopReason

from . import distribute, process_settings
from .callbacks import (
    BestCheckpoint,
    EarlyStopping,
    EpochBackup,
    EpochReporter,
    ReduceLROnPlateau,
    RunState,
    StopRequest,
    TerminateOnNaN,
    call_reporter,
)
from .data import balanced_class_weight, make_dataset, make_train_dataset, normalize_splits, split_data
from .export import EXPORT_FORMATS, export_all, serving_model
from .layers import build_model, summarize, takes_integer_inputs
from .losses import build_loss, build_metrics
from .optimizers import build_optimizer
from .diagnostics import lr_range
from .diagnostics.data_checks import measure_features
from .diagnostics.findings import DEFAULT_LEARNING_RATES
from .diagnostics.setup import prepare_diagnostics, reports_diagnostics
from .preflight import preflight
from .types import InMemoryReporter, Reporter, ResumeState, TrainData, TrainResult, describe_error

logger = logging.getLogger(__name__)



def _ends_well(stop_reason: str) -> bool:
    """A run that ended well: its best checkpoint must load, and gets its SavedModel export."""
    reason = StopReason.parse(stop_reason)
    return reason is not None and reason.ends_well


def _resolve_monitor(monitor: str, has_validation: bool, what: str) -> str:
    # The spec defaults to val_* monitors; without validation data only the training value exists.
    if monitor.startswith("val_") and not has_validation:
        fallback = monitor.removeprefix("val_")
        logger.warning("%s monitors %r but the job has no validation data; using %r", what, monitor,
                       fallback)
        return fallback
    return monitor


def _floats(logs: dict) -> dict[str, float]:
    return {key: float(value) for key, value in logs.items()}


def _evaluate_checkpoint(path: Path, x, y, batch_size: int) -> dict[str, float]:
    # Loading the file (not reusing the in-memory model) also proves the artifact is usable.
    # safe_mode (Keras' default, spelled out): a checkpoint, even one of ours, never runs code as it loads.
    model = keras.models.load_model(path, safe_mode=True)
    logs = model.evaluate(make_dataset(x, y, batch_size), verbose=0, return_dict=True)
    return _floats(logs)


def train(spec: dict, data: TrainData, reporter: Reporter, workdir: str | Path,
          resume: ResumeState | None = None, *, devices: list[str] | None = None,
          initial_weights: str | Path | None = None,
          export_formats: tuple[str, ...] = EXPORT_FORMATS) -> TrainResult:
    """Train the model ``spec`` describes on ``data``, reporting progress to ``reporter``.

    Checkpoints go to ``workdir/checkpoints``. Any exception is reported as ``finished`` with
    stop_reason ``error`` and ``error`` naming it (``describe_error``), then re-raised. When the reporter
    has ``backup_saved``, every completed epoch is backed up to ``workdir/backup``; ``resume`` continues
    such a backup at its next epoch. A job with ``resources.gpus`` > 1 (or explicit ``devices``) trains
    under MirroredStrategy (distribute.py); ``training.batch_size`` is then the global batch, split
    across the replicas. ``initial_weights`` (a ``.keras`` checkpoint or a ``.weights.h5`` backup of a
    model with the same layers: a fork's parent) sets the model's weights before it is compiled, so the
    optimizer, its step count and the callbacks start fresh; ``resume`` wins over it. ``export_formats``
    are the exports a reporter with ``export_saved`` gets when the run ends well (export.py). Each reporter method is called once per event: retrying a write is the
    reporter's business (workers/reporting.py); one that still fails is logged and training goes on.
    """
    run = _Run(spec, data, reporter, Path(workdir), resume, devices, initial_weights)
    run.export_formats = tuple(export_formats)
    try:
        run.build()
        run.compile()
        run.lr_range_test()
        run.callbacks()
        run.started()
        stopped = run.preflight()
        if stopped is not None:
            return run.result(stopped, **run.diagnosis(stopped))
        run.fit()
        run.evaluate()
    except Exception as exc:
        logger.exception("training failed")
        run.result(StopReason.ERROR, error=describe_error(exc))
        raise
    run.phase_done("evaluate")
    return run.result(run.stop_reason, run.test_metrics, **run.diagnosis(run.stop_reason))


class _Run:
    """One call of ``train``, one method per step; what a step makes is kept for the steps after it."""

    def __init__(self, spec: dict, data: TrainData, reporter: Reporter, workdir: Path,
                 resume: ResumeState | None, devices: list[str] | None,
                 initial_weights: str | Path | None = None) -> None:
        self.started_at = time.monotonic()
        self.timings: dict[str, float] = {}
        self._phase_began = time.perf_counter()
        self.spec, self.data, self.reporter, self.workdir = spec, data, reporter, workdir
        self.resume, self.devices = resume, devices
        self.initial_weights = initial_weights if resume is None else None
        self.training = spec["training"]
        self.callbacks_spec = spec.get("callbacks") or {}
        self.state = RunState()
        # What a result reports, whichever step the run ended in.
        self.epoch_reporter: EpochReporter | None = None
        self.checkpoint: BestCheckpoint | None = None
        self.monitor = (self.callbacks_spec.get("checkpoint") or {}).get("monitor") or "val_loss"
        self.normalization = None
        self.stop_reason = StopReason.COMPLETED
        self.test_metrics: dict | None = None
        # The error finding that stopped the run (stop reason diagnosis).
        self.stopped_by: dict | None = None
        self.export_formats: tuple[str, ...] = EXPORT_FORMATS
        # The learning-rate range test: wanted with diagnostics.lr_range_test or optimizer.learning_rate
        # "auto"; its record (diagnostics/lr_range.py) and, with "auto", the rate the run trains at. A
        # resumed run takes both from its backup instead of sweeping again.
        self.auto_rate = (spec.get("optimizer") or {}).get("learning_rate") == LEARNING_RATE_AUTO
        self.wants_range_test = self.auto_rate or bool((spec.get("diagnostics") or {}).get("lr_range_test"))
        carried = resume.state if resume is not None else {}
        self.range_test_record: dict | None = carried.get("lr_range_test")
        self.learning_rate_chosen: float | None = carried.get("learning_rate_chosen")

    def phase_done(self, name: str) -> None:
        # A phase may come back after another (setup goes on after the range test): its seconds add up.
        now = time.perf_counter()
        self.timings[name] = round(self.timings.get(name, 0.0) + now - self._phase_began, 4)
        self._phase_began = now

    def build(self) -> None:
        """Prepare the arrays and build the model (under the device strategy, seeded, in its precision)."""
        spec, training = self.spec, self.training
        self.integer_inputs = takes_integer_inputs(spec["model"])
        self.strategy = distribute.strategy_for(spec, self.devices)
        splits = split_data(spec, self.data)
        # The data checks look at the splits before normalisation (diagnostics/data_checks.py); what they
        # measure is small, so the raw splits need not outlive this method.
        self.data_report = None
        if self._checks_data():
            self.data_report = measure_features(splits, integer_inputs=self.integer_inputs)
        self.prepared = normalize_splits(spec, splits, integer_inputs=self.integer_inputs)
        del splits
        # training.class_weight "balanced": Keras' class_weight, from the training split's labels.
        self.class_weight = (balanced_class_weight(self.prepared.y_train)
                             if training.get("class_weight") == "balanced" else None)
        self.normalization = self.prepared.normalization
        self.batch_size = int(training["batch_size"])
        self.epochs = int(training["epochs"])
        self.seed = training.get("seed")
        self.n_train = len(self.prepared.x_train)
        self.steps_per_epoch = math.ceil(self.n_train / self.batch_size)
        self.has_validation = self.prepared.x_val is not None

        self.schedule = spec.get("schedule") or {"type": "constant"}
        self.reduce_lr_spec = self.callbacks_spec.get("reduce_lr_on_plateau")
        if self.reduce_lr_spec and self.schedule.get("type", "constant") != "constant":
            raise ValueError("reduce_lr_on_plateau only works with the constant schedule")

        self.replicas = self.strategy.num_replicas_in_sync if self.strategy is not None else 1
        # Under a strategy every variable (model, optimizer, metrics) is created in its scope: mirrored.
        with distribute.scope(self.strategy):
            with process_settings.dtype_policy(bool(training.get("mixed_precision"))) as mixed:
                if self.seed is not None:
                    process_settings.seed_everything(self.seed)
                self.model = build_model(spec, float32_output=mixed)
                if self.initial_weights is not None:
                    # Before compile: the model has no optimizer yet, so only the layers' weights load
                    # (a backup's optimizer variables are left in the file).
                    self.model.load_weights(str(self.initial_weights))
                    logger.info("started from the weights in %s", Path(self.initial_weights).name)
        self.mixed = mixed

    def _checks_data(self) -> bool:
        """Diagnostics on (and kept on: a strategy turns them off), with a reporter that takes findings."""
        options = self.spec.get("diagnostics") or {}
        return (bool(options.get("enabled", True)) and self.strategy is None
                and reports_diagnostics(self.reporter))

    def compile(self, rate: float | None = None) -> None:
        """Optimizer (with its schedule), loss and metrics, in the strategy's scope like the model.

        ``rate`` replaces the spec's learning rate. Before a range test the optimizer gets a constant rate
        (the spec's, or with "auto" a placeholder the sweep overwrites at once) and no schedule: a variable
        the test can set step by step.
        """
        spec = self.spec
        optimizer = dict(spec["optimizer"])
        if rate is not None:
            optimizer["learning_rate"] = rate
        elif self.auto_rate:
            # A resumed run trains at the rate its first attempt chose (from the backup).
            optimizer["learning_rate"] = self.learning_rate_chosen or self._default_rate()
        constant = self.wants_range_test and self.resume is None and self.range_test_record is None
        with distribute.scope(self.strategy):
            self.jit_compile = process_settings.resolve_jit_compile(bool(self.training.get("jit_compile")))
            self.model.compile(
                optimizer=build_optimizer(optimizer, None if constant else self.schedule, self.steps_per_epoch),
                loss=build_loss(spec["loss"]),
                metrics=build_metrics(spec.get("metrics"), spec["loss"]),
                jit_compile=self.jit_compile,
            )

    def _default_rate(self) -> float:
        return DEFAULT_LEARNING_RATES.get(self.spec["optimizer"].get("type", ""), 0.001)

    def lr_range_test(self) -> None:
        """The learning-rate range test, on a copy of the state; with "auto", the run then trains at the
        rate it suggests (the schedule, if any, starts from it). Its seconds are the phase
        ``lr_range_test`` of the timings."""
        if not self.wants_range_test:
            return
        if self.resume is None:
            self.phase_done("setup")
            steps = lr_range.planned_steps(self.epochs * self.steps_per_epoch)
            # In the strategy's scope: building the optimizer creates (mirrored) variables.
            with distribute.scope(self.strategy):
                result = lr_range.range_test(self.model, self.prepared.x_train, self.prepared.y_train,
                                             self.batch_size, steps=steps, should_stop=self.reporter.should_stop,
                                             class_weight=self.class_weight)
            self.range_test_record = result.record()
            if self.auto_rate:
                self.learning_rate_chosen = result.suggested or self._default_rate()
                self.range_test_record["learning_rate_chosen"] = self.learning_rate_chosen
            rate = self.learning_rate_chosen if self.auto_rate else None
            if self.schedule.get("type", "constant") != "constant":
                self.compile(rate)  # the real optimizer, with its schedule, from the chosen rate
            else:
                self.model.optimizer.learning_rate = (
                    rate if rate is not None else float(self.spec["optimizer"]["learning_rate"]))
            self.phase_done("lr_range_test")
        elif self.auto_rate and self.learning_rate_chosen is None:
            logger.warning("the backup holds no chosen learning rate; the resumed run trains at %g",
                           self._default_rate())
        if self.auto_rate:
            # From here on the run is the spec with the chosen rate: diagnostics judge that rate.
            self.spec = copy.deepcopy(self.spec)
            self.spec["optimizer"]["learning_rate"] = self.learning_rate_chosen or self._default_rate()
            logger.info("learning rate chosen by the range test: %g", self.spec["optimizer"]["learning_rate"])

    def callbacks(self) -> None:
        """The callbacks in the order they must run, diagnostics, and the state a resumed run continues."""
        spec, reporter, state, resume = self.spec, self.reporter, self.state, self.resume
        callbacks_spec, has_validation = self.callbacks_spec, self.has_validation
        self.monitor = _resolve_monitor(self.monitor, has_validation, "checkpoint")
        self.epoch_reporter = EpochReporter(reporter, state)
        self.checkpoint = BestCheckpoint(
            self.workdir / "checkpoints", self.monitor,
            (callbacks_spec.get("checkpoint") or {}).get("mode", "auto"), reporter, state,
        )
        max_runtime = (spec.get("limits") or {}).get("max_runtime_seconds")
        elapsed_before = float((resume.state if resume else {}).get("elapsed_seconds") or 0.0)
        # The limit covers the whole job: a resumed run gets what earlier attempts left of it.
        deadline = self.started_at + float(max_runtime) - elapsed_before if max_runtime else None
        # Order matters: stop checks first (batch level); at epoch end report the row before the
        # checkpoint that refers to it, and both before plateau/early-stopping decisions.
        self.callback_list: list[keras.callbacks.Callback] = [
            StopRequest(reporter.should_stop, state, deadline=deadline),
            TerminateOnNaN(state),
            self.epoch_reporter,
            self.checkpoint,
        ]
        reduce_lr = None
        if self.reduce_lr_spec:
            reduce_lr_args = dict(self.reduce_lr_spec)
            reduce_lr_args["monitor"] = _resolve_monitor(
                reduce_lr_args.get("monitor", "val_loss"), has_validation, "reduce_lr_on_plateau")
            reduce_lr = ReduceLROnPlateau(state, **reduce_lr_args)
            self.callback_list.append(reduce_lr)
        self.early_stopping = None
        if callbacks_spec.get("early_stopping"):
            es_args = dict(callbacks_spec["early_stopping"])
            es_args["monitor"] = _resolve_monitor(
                es_args.get("monitor", "val_loss"), has_validation, "early_stopping")
            self.early_stopping = EarlyStopping(state, **es_args)
            self.callback_list.append(self.early_stopping)
        prepared = self.prepared
        self.diagnostics = prepare_diagnostics(
            distribute.without_probes(spec) if self.strategy is not None else spec, self.model,
            self.data.x_train, self.data.y_train, prepared.x_train, prepared.y_train, reporter, state,
            integer_inputs=self.integer_inputs, data_report=self.data_report)
        if self.range_test_record is not None:
            # Findings that suggest a rate take the range test's when it points their way (findings.py).
            self.diagnostics.context.range_test_rate = self.range_test_record.get("suggested_learning_rate")
        if self.diagnostics.callback is not None:
            self.callback_list.append(self.diagnostics.callback)
            if resume is not None:
                self.diagnostics.callback.continue_from(resume.diagnostics_history, resume.epoch)
                if resume.state.get("stop_training"):
                    self.diagnostics.callback.stop_confirmed_in_history()
        self.initial_epoch = _resume_callbacks(
            resume, self.epochs, reporter=self.epoch_reporter, checkpoint=self.checkpoint,
            reduce_lr_on_plateau=reduce_lr, early_stopping=self.early_stopping)
        if callable(getattr(reporter, "backup_saved", None)):
            # Last, so the state it saves is the one after every other callback saw the epoch.
            self.callback_list.append(EpochBackup(
                self.workdir / "backup", reporter, state,
                {"reporter": self.epoch_reporter, "checkpoint": self.checkpoint,
                 "reduce_lr_on_plateau": reduce_lr, "early_stopping": self.early_stopping},
                elapsed_before=elapsed_before, resume=resume, carry=self._carried()))
        elif resume is not None:
            raise ValueError("resuming needs a reporter with backup_saved()")

    def _carried(self) -> dict:
        """What a resumed run takes from the backup instead of sweeping again: the range test's record and
        the rate "auto" chose."""
        carry = {}
        if self.range_test_record is not None:
            carry["lr_range_test"] = self.range_test_record
        if self.learning_rate_chosen is not None:
            carry["learning_rate_chosen"] = self.learning_rate_chosen
        return carry

    def started(self) -> None:
        """Setup is done: report the model's facts and the setup findings."""
        model, prepared = self.model, self.prepared
        trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
        info = {
            "params": int(model.count_params()),
            "trainable_params": trainable,
            "summary": summarize(model, self.spec["model"]),
            "steps_per_epoch": self.steps_per_epoch,
            "train_samples": self.n_train,
            "val_samples": len(prepared.x_val) if self.has_validation else 0,
            "test_samples": len(prepared.x_test) if prepared.x_test is not None else 0,
            "normalization": self.normalization,
            "mixed_precision": self.mixed,
            "jit_compile": self.jit_compile,
            "replicas": self.replicas,
        }
        info["variables"] = self.diagnostics.variables
        info.update(self._carried())
        self.phase_done("setup")
        call_reporter(self.reporter.started, info, what="started")
        self.diagnostics.report(self.reporter, self.diagnostics.setup_findings)

    def preflight(self) -> str | None:
        """With ``diagnostics.on_error: "stop"``, an error finding known before training (the data and
        spec checks) stops the run with stop reason ``diagnosis``: it would hold in every epoch, so the
        preflight steps are not worth taking. Otherwise a few steps on one batch fail NaN or gradient-free
        jobs fast; the stop reason if the run stops here.
        """
        diagnostics = self.diagnostics
        # A resumed run already passed preflight; it restores every variable it touches (preflight.py).
        if self.resume is not None:
            return None
        self.stopped_by = diagnostics.confirmed_before_training([])
        if self.stopped_by is not None:
            logger.info("stopping before training: error finding %s (diagnostics.on_error stop)",
                        self.stopped_by["id"])
            return StopReason.DIAGNOSIS
        if diagnostics.preflight:
            checked = preflight(self.model, self.spec, self.prepared.x_train, self.prepared.y_train,
                                context=diagnostics.context, measure=diagnostics.measure,
                                class_weight=self.class_weight)
            self.phase_done("preflight")
            logger.info("preflight on one batch: %s",
                        "passed" if checked.ok else f"failed ({checked.stop_reason})")
            if not checked.ok:
                # NaN and gradient-free runs keep their own stop reasons (nan_loss, no_gradients).
                diagnostics.report(self.reporter, checked.findings)
                return checked.stop_reason
        return None

    def diagnosis(self, stop_reason: str) -> dict:
        """The result's error code and message when a confirmed error finding stopped the run."""
        if stop_reason != StopReason.DIAGNOSIS:
            return {}
        callback = self.diagnostics.callback
        finding = self.stopped_by or (callback.stopped_by if callback is not None else None)
        if finding is None:
            return {}
        where = "before training" if finding.get("epoch") is None else f"at epoch {finding['epoch']}"
        return {"error_code": finding["code"],
                "error": f"Stopped {where} by the {finding['code']} finding ({finding['id']}): "
                         f"{finding['message']} Set diagnostics.on_error: continue to train anyway."}

    def fit(self) -> None:
        """Fit from the initial epoch, then name why it stopped."""
        prepared, training, seed = self.prepared, self.training, self.seed
        train_ds = make_train_dataset(
            prepared.x_train, prepared.y_train, self.batch_size,
            shuffle=bool(training.get("shuffle", True)),
            # An explicit shuffle seed even without a job seed: op determinism, once on in this
            # process, rejects unseeded shuffles.
            seed=seed if seed is not None else int(np.random.SeedSequence().generate_state(1)[0]),
            first_epoch=self.initial_epoch,  # a resumed run continues with the epoch orders it would have had
        )
        val_ds = make_dataset(prepared.x_val, prepared.y_val, self.batch_size) if self.has_validation else None
        # "fit" counts building the data sets above: they copy the arrays into tensors.
        # shuffle=False: the dataset shuffles itself; fit would only warn about the flag.
        self.model.fit(train_ds, validation_data=val_ds, epochs=self.epochs, steps_per_epoch=self.steps_per_epoch,
                       verbose=0, callbacks=self.callback_list, shuffle=False, initial_epoch=self.initial_epoch,
                       class_weight=self.class_weight)
        self.phase_done("fit")

        if self.state.stop_reason is not None:
            self.stop_reason = self.state.stop_reason
        elif self.early_stopping is not None and self.early_stopping.triggered:
            self.stop_reason = StopReason.EARLY_STOPPING
        else:
            self.stop_reason = StopReason.COMPLETED

    def evaluate(self) -> None:
        """The best checkpoint, loaded from its file, on the test split; its export when the run ended well."""
        prepared, checkpoint, stop_reason = self.prepared, self.checkpoint, self.stop_reason
        # A cancelled or timed-out job should stop now, not spend more time on the test split.
        if (prepared.x_test is not None and checkpoint.best_path is not None
                and stop_reason not in (StopReason.CANCELLED, StopReason.MAX_RUNTIME)):
            self.test_metrics = _evaluate_checkpoint(checkpoint.best_path, prepared.x_test, prepared.y_test,
                                                     self.batch_size)
        elif checkpoint.best_path is not None and _ends_well(stop_reason):
            # A job must never end well with a best checkpoint that does not load: prove it does.
            keras.models.load_model(checkpoint.best_path, compile=False, safe_mode=True)
        if checkpoint.best_path is not None and _ends_well(stop_reason):
            self.phase_done("evaluate")
            self._export_best()

    def _export_best(self) -> None:
        """The final best checkpoint's serving model in every export format, each with the model card, for
        reporters with ``export_saved``.

        Timed as phases: ``export_prepare`` (the card, loading the checkpoint, building the serving model),
        ``export_<format>`` for each format, ``export_store`` (the reporter storing them). Before
        ``finished``: a job that ends well already has its exports. An export that fails costs the job
        nothing (the ``.keras`` checkpoint is the artifact it promises); it is logged and skipped.
        """
        reporter, checkpoint = self.reporter, self.checkpoint
        if not callable(getattr(reporter, "export_saved", None)) or not self.export_formats:
            return
        facts = {
            "best": {"monitor": self.monitor, "value": checkpoint.best_value, "epoch": checkpoint.best_epoch},
            "test_metrics": self.test_metrics,
            "normalization": self.normalization,
            "phases": dict(self.timings),
        }
        card = facts
        if callable(getattr(reporter, "model_card", None)):
            try:
                card = reporter.model_card(facts) or facts
            except Exception:
                logger.exception("could not build the model card; the exports carry the trainer's facts")
        try:
            # The file, not the in-memory model: what is exported is exactly what users download.
            model = serving_model(keras.models.load_model(checkpoint.best_path, compile=False), self.normalization)
        except Exception:
            logger.exception("could not build the serving model to export; the .keras file stays")
            return
        finally:
            self.phase_done("export_prepare")
        for fmt, made in export_all(model, self.workdir / "exports", checkpoint.best_epoch, card=card,
                                    formats=self.export_formats):
            phase = f"export_{fmt.replace('-', '_')}"
            self.phase_done(phase)
            if isinstance(made, Exception):
                logger.error("could not export the best checkpoint as %s; the .keras file stays", fmt,
                             exc_info=made)
                continue
            logger.info("exported the best checkpoint as %s: %d bytes in %.2f s", fmt, made.size, self.timings[phase])
            call_reporter(reporter.export_saved, fmt, checkpoint.best_epoch, str(made.path), made.size,
                          made.sha256, what="export_saved")
            self.phase_done("export_store")

    def result(self, stop_reason: str, test_metrics: dict | None = None, error: str | None = None,
               error_code: str | None = None) -> TrainResult:
        """The run's result, reported as ``finished`` and returned."""
        checkpoint, epoch_reporter = self.checkpoint, self.epoch_reporter
        final = TrainResult(
            stop_reason=stop_reason,
            epochs_run=epoch_reporter.epochs_reported if epoch_reporter else 0,
            monitor=self.monitor,
            best_epoch=checkpoint.best_epoch if checkpoint else None,
            best_value=checkpoint.best_value if checkpoint else None,
            best_checkpoint=str(checkpoint.best_path) if checkpoint and checkpoint.best_path else None,
            test_metrics=test_metrics,
            normalization=self.normalization,
            timings=dict(self.timings),
            error=error,
            error_code=error_code,
        )
        call_reporter(self.reporter.finished, final, what=f"finished({stop_reason})")
        return final


def _resume_callbacks(resume: ResumeState | None, epochs: int, **stateful) -> int:
    """Give the callbacks the state a resumed run continues from; return fit's ``initial_epoch``."""
    if resume is None:
        return 0
    saved = resume.state.get("callbacks") or {}
    for name, callback in stateful.items():
        if callback is None or not saved.get(name):
            continue
        if name == "checkpoint":
            callback.set_state(saved[name], best_path=resume.best_checkpoint_path)
        else:
            callback.set_state(saved[name])
    # A backup taken when early stopping had just ended the run resumes straight to its end.
    return epochs if resume.state.get("stop_training") else min(int(resume.epoch), epochs)


_WARM_UP_SPEC = {
    "version": 1,
    "name": "warm-up",
    "dataset": {"id": "warm-up", "validation_split": 0.25, "normalize": "standardize",
                "normalize_targets": "none"},
    "model": {"input_shape": [8], "layers": [
        {"type": "dense", "units": 8, "activation": "relu"},
        {"type": "dense", "units": 3, "activation": "softmax"},
    ]},
    "loss": "sparse_categorical_crossentropy",
    "metrics": ["accuracy"],
    "optimizer": {"type": "adam", "learning_rate": 0.001},
    "schedule": {"type": "constant"},
    "callbacks": {"early_stopping": None, "checkpoint": {"monitor": "val_loss", "mode": "min"},
                  "reduce_lr_on_plateau": None},
    # No seed: warming up must not switch on process-wide op determinism.
    "training": {"epochs": 1, "batch_size": 16, "shuffle": True, "seed": None,
                 "mixed_precision": False, "jit_compile": False},
    "limits": {"max_runtime_seconds": None},
    # On, so a worker's first job does not pay the first use of the probe's and preflight's eager ops.
    "diagnostics": {"enabled": True, "preflight": True},
}


def warm_up() -> float:
    """Run one tiny job end to end (fit, checkpoint, load, evaluate); return the seconds spent.

    Call once per worker process (after any fork) so the first real job does not pay TensorFlow's
    one-off start-up: kernel registration, tf.data and tf.function machinery, the saving code path.
    """
    began = time.perf_counter()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype(np.float32)
    y = rng.integers(0, 3, size=64)
    data = TrainData(x, y, x_test=x[:16], y_test=y[:16])
    with tempfile.TemporaryDirectory(prefix="trainyard-warm-up-") as tmp:
        train(_WARM_UP_SPEC, data, InMemoryReporter(), tmp)
    return time.perf_counter() - began
