"""``train(spec, data, reporter, workdir)``: build, compile, fit with callbacks, evaluate, report."""

from __future__ import annotations

import logging
import math
import tempfile
import time
from pathlib import Path

import keras
import numpy as np

from trainyard.stop_reasons import StopReason

from . import distribute, runtime
from .callbacks import (
    BestCheckpoint,
    EarlyStopping,
    EpochBackup,
    EpochReporter,
    ReduceLROnPlateau,
    RunState,
    StopRequest,
    TerminateOnNaN,
    call_with_retry,
)
from .data import make_dataset, make_train_dataset, prepare_data
from .export import export_savedmodel
from .layers import build_model, summarize, takes_integer_inputs
from .losses import build_loss, build_metrics
from .optimizers import build_optimizer
from .diagnostics.setup import prepare_diagnostics
from .preflight import preflight
from .types import InMemoryReporter, Reporter, ResumeState, TrainData, TrainResult, describe_error

logger = logging.getLogger(__name__)

# Reporter calls from callbacks: a couple of retries with a short sleep, then log and carry on.
RETRY_ATTEMPTS = 3
RETRY_DELAY_SECONDS = 0.2


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
          resume: ResumeState | None = None, *, devices: list[str] | None = None) -> TrainResult:
    """Train the model ``spec`` describes on ``data``, reporting progress to ``reporter``.

    Checkpoints go to ``workdir/checkpoints``. Any exception is reported as ``finished`` with
    stop_reason ``error`` and ``error`` naming it (``describe_error``), then re-raised. When the reporter has ``backup_saved``, every completed
    epoch is backed up to ``workdir/backup``; ``resume`` continues such a backup at its next epoch.
    A job with ``resources.gpus`` > 1 (or explicit ``devices``) trains under MirroredStrategy
    (distribute.py); ``training.batch_size`` is then the global batch, split across the replicas.
    """
    started_at = time.monotonic()
    timings: dict[str, float] = {}
    phase_began = time.perf_counter()

    def phase_done(name: str) -> None:
        nonlocal phase_began
        now = time.perf_counter()
        timings[name] = round(now - phase_began, 4)
        phase_began = now

    workdir = Path(workdir)
    training = spec["training"]
    callbacks_spec = spec.get("callbacks") or {}
    state = RunState()
    epoch_reporter: EpochReporter | None = None
    checkpoint: BestCheckpoint | None = None
    monitor = (callbacks_spec.get("checkpoint") or {}).get("monitor") or "val_loss"
    normalization = None

    def result(stop_reason: str, test_metrics: dict | None = None, error: str | None = None) -> TrainResult:
        return TrainResult(
            stop_reason=stop_reason,
            epochs_run=epoch_reporter.epochs_reported if epoch_reporter else 0,
            monitor=monitor,
            best_epoch=checkpoint.best_epoch if checkpoint else None,
            best_value=checkpoint.best_value if checkpoint else None,
            best_checkpoint=str(checkpoint.best_path) if checkpoint and checkpoint.best_path else None,
            test_metrics=test_metrics,
            normalization=normalization,
            timings=dict(timings),
            error=error,
        )

    try:
        integer_inputs = takes_integer_inputs(spec["model"])
        prepared = prepare_data(spec, data, integer_inputs=integer_inputs)
        normalization = prepared.normalization
        batch_size = int(training["batch_size"])
        epochs = int(training["epochs"])
        seed = training.get("seed")
        n_train = len(prepared.x_train)
        steps_per_epoch = math.ceil(n_train / batch_size)
        has_validation = prepared.x_val is not None

        schedule = spec.get("schedule") or {"type": "constant"}
        reduce_lr_spec = callbacks_spec.get("reduce_lr_on_plateau")
        if reduce_lr_spec and schedule.get("type", "constant") != "constant":
            raise ValueError("reduce_lr_on_plateau only works with the constant schedule")

        strategy = distribute.strategy_for(spec, devices)
        replicas = strategy.num_replicas_in_sync if strategy is not None else 1
        # Under a strategy every variable (model, optimizer, metrics) is created in its scope: mirrored.
        with distribute.scope(strategy):
            with runtime.dtype_policy(bool(training.get("mixed_precision"))) as mixed:
                if seed is not None:
                    runtime.seed_everything(seed)
                model = build_model(spec, float32_output=mixed)
            jit_compile = runtime.resolve_jit_compile(bool(training.get("jit_compile")))
            model.compile(
                optimizer=build_optimizer(spec["optimizer"], schedule, steps_per_epoch),
                loss=build_loss(spec["loss"]),
                metrics=build_metrics(spec.get("metrics"), spec["loss"]),
                jit_compile=jit_compile,
            )

        monitor = _resolve_monitor(monitor, has_validation, "checkpoint")
        retry = {"retry_attempts": RETRY_ATTEMPTS, "retry_delay": RETRY_DELAY_SECONDS}
        epoch_reporter = EpochReporter(reporter, state, **retry)
        checkpoint = BestCheckpoint(
            workdir / "checkpoints", monitor, (callbacks_spec.get("checkpoint") or {}).get("mode", "auto"),
            reporter, state, **retry,
        )
        max_runtime = (spec.get("limits") or {}).get("max_runtime_seconds")
        elapsed_before = float((resume.state if resume else {}).get("elapsed_seconds") or 0.0)
        # The limit covers the whole job: a resumed run gets what earlier attempts left of it.
        deadline = started_at + float(max_runtime) - elapsed_before if max_runtime else None
        # Order matters: stop checks first (batch level); at epoch end report the row before the
        # checkpoint that refers to it, and both before plateau/early-stopping decisions.
        callbacks: list[keras.callbacks.Callback] = [
            StopRequest(reporter.should_stop, state, deadline=deadline),
            TerminateOnNaN(state),
            epoch_reporter,
            checkpoint,
        ]
        if reduce_lr_spec:
            reduce_lr_args = dict(reduce_lr_spec)
            reduce_lr_args["monitor"] = _resolve_monitor(
                reduce_lr_args.get("monitor", "val_loss"), has_validation, "reduce_lr_on_plateau")
            reduce_lr = ReduceLROnPlateau(state, **reduce_lr_args)
            callbacks.append(reduce_lr)
        reduce_lr = reduce_lr if reduce_lr_spec else None
        early_stopping = None
        if callbacks_spec.get("early_stopping"):
            es_args = dict(callbacks_spec["early_stopping"])
            es_args["monitor"] = _resolve_monitor(
                es_args.get("monitor", "val_loss"), has_validation, "early_stopping")
            early_stopping = EarlyStopping(state, **es_args)
            callbacks.append(early_stopping)
        diagnostics = prepare_diagnostics(
            distribute.without_probes(spec) if strategy is not None else spec, model, data.x_train, data.y_train, prepared.x_train, prepared.y_train, reporter, state,
            integer_inputs=integer_inputs, retry_attempts=RETRY_ATTEMPTS, retry_delay=RETRY_DELAY_SECONDS)
        if diagnostics.callback is not None:
            callbacks.append(diagnostics.callback)
            if resume is not None:
                diagnostics.callback.continue_from(resume.diagnostics_history, resume.epoch)
        initial_epoch = _resume_callbacks(
            resume, epochs, reporter=epoch_reporter, checkpoint=checkpoint, reduce_lr_on_plateau=reduce_lr,
            early_stopping=early_stopping)
        if callable(getattr(reporter, "backup_saved", None)):
            # Last, so the state it saves is the one after every other callback saw the epoch.
            callbacks.append(EpochBackup(
                workdir / "backup", reporter, state,
                {"reporter": epoch_reporter, "checkpoint": checkpoint, "reduce_lr_on_plateau": reduce_lr,
                 "early_stopping": early_stopping},
                elapsed_before=elapsed_before, resume=resume, **retry))
        elif resume is not None:
            raise ValueError("resuming needs a reporter with backup_saved()")

        trainable = int(sum(np.prod(w.shape) for w in model.trainable_weights))
        info = {
            "params": int(model.count_params()),
            "trainable_params": trainable,
            "summary": summarize(model, spec["model"]),
            "steps_per_epoch": steps_per_epoch,
            "train_samples": n_train,
            "val_samples": len(prepared.x_val) if has_validation else 0,
            "test_samples": len(prepared.x_test) if prepared.x_test is not None else 0,
            "normalization": normalization,
            "mixed_precision": mixed,
            "jit_compile": jit_compile,
            "replicas": replicas,
        }
        info["variables"] = diagnostics.variables
        phase_done("setup")
        call_with_retry(reporter.started, info, attempts=RETRY_ATTEMPTS, delay=RETRY_DELAY_SECONDS,
                        what="started")
        diagnostics.report(reporter, diagnostics.setup_findings, attempts=RETRY_ATTEMPTS,
                           delay=RETRY_DELAY_SECONDS)
        # A resumed run already passed preflight; it restores every variable it touches (preflight.py).
        if diagnostics.preflight and resume is None:
            checked = preflight(model, spec, prepared.x_train, prepared.y_train,
                                context=diagnostics.context, measure=diagnostics.measure)
            phase_done("preflight")
            logger.info("preflight on one batch: %s", "passed" if checked.ok else f"failed ({checked.stop_reason})")
            if not checked.ok:
                diagnostics.report(reporter, checked.findings, attempts=RETRY_ATTEMPTS,
                                   delay=RETRY_DELAY_SECONDS)
                final = result(checked.stop_reason)
                call_with_retry(reporter.finished, final, attempts=RETRY_ATTEMPTS,
                                delay=RETRY_DELAY_SECONDS, what="finished(preflight)")
                return final

        train_ds = make_train_dataset(
            prepared.x_train, prepared.y_train, batch_size,
            shuffle=bool(training.get("shuffle", True)),
            # An explicit shuffle seed even without a job seed: op determinism, once on in this
            # process, rejects unseeded shuffles.
            seed=seed if seed is not None else int(np.random.SeedSequence().generate_state(1)[0]),
            first_epoch=initial_epoch,  # a resumed run continues with the epoch orders it would have had
        )
        val_ds = make_dataset(prepared.x_val, prepared.y_val, batch_size) if has_validation else None
        # "fit" counts building the data sets above: they copy the arrays into tensors.
        # shuffle=False: the dataset shuffles itself; fit would only warn about the flag.
        model.fit(train_ds, validation_data=val_ds, epochs=epochs, steps_per_epoch=steps_per_epoch, verbose=0,
                  callbacks=callbacks, shuffle=False, initial_epoch=initial_epoch)
        phase_done("fit")

        if state.stop_reason is not None:
            stop_reason = state.stop_reason
        elif early_stopping is not None and early_stopping.triggered:
            stop_reason = StopReason.EARLY_STOPPING
        else:
            stop_reason = StopReason.COMPLETED

        test_metrics = None
        # A cancelled or timed-out job should stop now, not spend more time on the test split.
        if (prepared.x_test is not None and checkpoint.best_path is not None
                and stop_reason not in (StopReason.CANCELLED, StopReason.MAX_RUNTIME)):
            test_metrics = _evaluate_checkpoint(checkpoint.best_path, prepared.x_test, prepared.y_test,
                                                batch_size)
        elif checkpoint.best_path is not None and _ends_well(stop_reason):
            # A job must never end well with a best checkpoint that does not load: prove it does.
            keras.models.load_model(checkpoint.best_path, compile=False, safe_mode=True)
        if checkpoint.best_path is not None and _ends_well(stop_reason):
            _export_best(checkpoint.best_path, checkpoint.best_epoch, workdir, reporter)
    except Exception as exc:
        logger.exception("training failed")
        call_with_retry(reporter.finished, result(StopReason.ERROR, error=describe_error(exc)), attempts=RETRY_ATTEMPTS,
                        delay=RETRY_DELAY_SECONDS, what="finished(error)")
        raise

    phase_done("evaluate")
    final = result(stop_reason, test_metrics)
    call_with_retry(reporter.finished, final, attempts=RETRY_ATTEMPTS, delay=RETRY_DELAY_SECONDS,
                    what="finished")
    return final


def _export_best(best_path: Path, best_epoch: int, workdir: Path, reporter: Reporter) -> None:
    """The final best checkpoint as a SavedModel archive, for reporters with ``export_saved``.

    Before ``finished``: a job that ends well already has its export. An export that fails costs the
    job nothing (the ``.keras`` checkpoint is the artifact it promises); it is logged and skipped.
    """
    if not callable(getattr(reporter, "export_saved", None)):
        return
    path = workdir / "exports" / f"epoch-{best_epoch:04d}.savedmodel.tar.gz"
    try:
        size, sha256 = export_savedmodel(best_path, path)
    except Exception:
        logger.exception("could not export the best checkpoint as a SavedModel; the .keras file stays")
        return
    call_with_retry(reporter.export_saved, "savedmodel", best_epoch, str(path), size, sha256,
                    attempts=RETRY_ATTEMPTS, delay=RETRY_DELAY_SECONDS, what="export_saved")


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
