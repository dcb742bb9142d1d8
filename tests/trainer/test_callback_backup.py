"""Per-epoch backups and resuming from them: a resumed run continues exactly where the first stopped."""

import shutil

import keras
import numpy as np
import pytest

from workers.trainer import InMemoryReporter, TrainData, train
from workers.trainer.callbacks import EpochBackup, RunState
from workers.trainer.types import ResumeState

from .specs import make_spec

# The contract refuses a learning rate of 0; SGD's updates at 1e-10 vanish in float32, so the weights and
# the loss stay exactly as they are: a run that never improves.
FROZEN = {"type": "sgd", "learning_rate": 1e-10}
# Such a run is a device here, not a diagnosis: its lr_too_small finding would stop it after two epochs
# (diagnostics.on_error defaults to stop, issue 17), so the frozen runs only flag it.
FLAG_ONLY = {"on_error": "continue"}


class _StopAtEpoch(InMemoryReporter):
    """Asks for `reason` right after epoch `epoch` was backed up: the next batch is the last one."""

    def __init__(self, epoch: int, reason: str = "interrupted") -> None:
        super().__init__()
        self._stop_epoch = epoch
        self._reason = reason

    def should_stop(self):
        return self._reason if any(e == self._stop_epoch for e, _, _ in self.backups) else None


def _resume_from(reporter: InMemoryReporter, tmp_path, name: str) -> ResumeState:
    epoch, path, state = reporter.backups[-1]
    # The worker's disk is gone after a crash: resume from a copy, as the task does from the store.
    copy = tmp_path / f"{name}.weights.h5"
    shutil.copy(path, copy)
    return ResumeState(str(copy), epoch, state)


def test_backup_is_written_after_every_complete_epoch_with_callback_state(tmp_path, classification_data):
    reporter = InMemoryReporter()
    spec = make_spec(classification_data, training={"epochs": 3})
    train(spec, classification_data, reporter, tmp_path)
    assert [e for e, _, _ in reporter.backups] == [1, 2, 3]
    epoch, path, state = reporter.backups[-1]
    assert path.endswith("backup.weights.h5")
    assert state["epoch"] == 3 and state["elapsed_seconds"] > 0 and state["stop_training"] is False
    assert state["callbacks"]["reporter"] == {"epochs_reported": 3}
    assert state["callbacks"]["checkpoint"]["best_epoch"] == reporter.result.best_epoch
    assert list((tmp_path / "backup").iterdir()) == [tmp_path / "backup" / "backup.weights.h5"]


def test_no_backup_for_a_reporter_without_backup_saved(tmp_path, classification_data):
    class Plain:
        started = epoch_end = checkpoint_saved = finished = lambda self, *a: None

        def should_stop(self):
            return None

    train(make_spec(classification_data, training={"epochs": 1}), classification_data, Plain(), tmp_path)
    assert not (tmp_path / "backup").exists()
    with pytest.raises(ValueError, match="backup_saved"):
        train(make_spec(classification_data), classification_data, Plain(), tmp_path,
              resume=ResumeState(str(tmp_path / "x.weights.h5"), 1, {}))


def test_interrupted_then_resumed_equals_one_uninterrupted_run(tmp_path, classification_data):
    spec = make_spec(classification_data, training={"epochs": 4, "shuffle": False, "batch_size": 8})
    whole = InMemoryReporter()
    train(spec, classification_data, whole, tmp_path / "whole")

    first = _StopAtEpoch(2)
    result = train(spec, classification_data, first, tmp_path / "first")
    assert result.stop_reason == "interrupted"
    assert [e for e, _ in first.epochs] == [1, 2], "the cut-short epoch 3 is not reported"
    assert first.result.test_metrics is None

    second = InMemoryReporter()
    result = train(spec, classification_data, second, tmp_path / "second",
                   resume=_resume_from(first, tmp_path, "b2"))
    assert result.stop_reason == "completed" and result.epochs_run == 4
    assert [e for e, _ in second.epochs] == [3, 4]
    # Same weights, same optimizer moments and step counter: the losses match the uninterrupted run.
    for (epoch, logs), (_, expected) in zip(second.epochs, whole.epochs[2:]):
        assert logs["loss"] == pytest.approx(expected["loss"], rel=1e-5), epoch
    final = keras.models.load_model(result.best_checkpoint)
    assert int(final.optimizer.iterations.numpy()) == 4 * 8  # 64 rows / batch 8, four epochs


def test_resume_keeps_best_threshold_and_early_stopping_patience(tmp_path, classification_data):
    spec = make_spec(classification_data, training={"epochs": 30, "batch_size": 16, "shuffle": False},
                     optimizer=FROZEN, diagnostics=FLAG_ONLY,
                     callbacks={"early_stopping": {"monitor": "loss", "patience": 3}})
    # A frozen run never improves the loss: epoch 1 is best, patience runs out at epoch 4.
    first = _StopAtEpoch(2)
    train(spec, classification_data, first, tmp_path / "first")
    assert first.backups[-1][2]["callbacks"]["early_stopping"]["wait"] == 1
    resume = _resume_from(first, tmp_path, "b")
    best = tmp_path / "best.keras"
    shutil.copy(first.checkpoints[-1]["path"], best)
    resume.best_checkpoint_path = str(best)

    second = InMemoryReporter()
    result = train(spec, classification_data, second, tmp_path / "second", resume=resume)
    assert result.stop_reason == "early_stopping"
    assert [e for e, _ in second.epochs] == [3, 4], "patience continued from the first attempt"
    assert second.checkpoints == [], "an equal value never replaces the best checkpoint"
    assert (result.best_epoch, result.best_checkpoint) == (1, str(best))


def test_backup_taken_when_early_stopping_ended_the_run_resumes_to_its_end(tmp_path, classification_data):
    spec = make_spec(classification_data, training={"epochs": 30, "batch_size": 16, "shuffle": False},
                     optimizer=FROZEN, diagnostics=FLAG_ONLY,
                     callbacks={"early_stopping": {"monitor": "loss", "patience": 1}})
    first = InMemoryReporter()
    train(spec, classification_data, first, tmp_path / "first")
    assert first.result.stop_reason == "early_stopping"
    assert first.backups[-1][2]["stop_training"] is True
    second = InMemoryReporter()
    result = train(spec, classification_data, second, tmp_path / "second",
                   resume=_resume_from(first, tmp_path, "b"))
    assert result.stop_reason == "early_stopping" and second.epochs == []


def test_reduced_learning_rate_and_plateau_counters_survive_a_resume(tmp_path, classification_data):
    spec = make_spec(classification_data, training={"epochs": 5, "batch_size": 16, "shuffle": False},
                     optimizer=FROZEN, diagnostics=FLAG_ONLY,
                     callbacks={"reduce_lr_on_plateau": {"monitor": "loss", "factor": 0.5, "patience": 1,
                                                         "min_delta": 0.0}})
    first = _StopAtEpoch(3)
    train(spec, classification_data, first, tmp_path / "first")
    saved = first.backups[-1][2]["callbacks"]["reduce_lr_on_plateau"]
    assert set(saved) == {"wait", "best", "cooldown_counter"}
    second = InMemoryReporter()
    train(spec, classification_data, second, tmp_path / "second", resume=_resume_from(first, tmp_path, "b"))
    assert second.backups[0][2]["callbacks"]["reduce_lr_on_plateau"]["best"] == pytest.approx(saved["best"])


def test_time_limit_counts_earlier_attempts(tmp_path, classification_data):
    spec = make_spec(classification_data, training={"epochs": 50}, limits={"max_runtime_seconds": 5})
    first = _StopAtEpoch(1)
    train(spec, classification_data, first, tmp_path / "first")
    resume = _resume_from(first, tmp_path, "b")
    resume.state["elapsed_seconds"] = 1e6  # the earlier attempts used up the whole limit
    second = InMemoryReporter()
    result = train(spec, classification_data, second, tmp_path / "second", resume=resume)
    assert result.stop_reason == "max_runtime"
    assert len(second.epochs) == 0


def test_constructor_validates_arguments(tmp_path):
    with pytest.raises(TypeError, match="backup_saved"):
        EpochBackup(tmp_path, object(), RunState(), {})
    with pytest.raises(TypeError, match="get_state"):
        EpochBackup(tmp_path, InMemoryReporter(), RunState(), {"x": object()})


def test_backup_file_restores_weights_and_optimizer(tmp_path, classification_data):
    reporter = InMemoryReporter()
    train(make_spec(classification_data, training={"epochs": 2}), classification_data, reporter, tmp_path)
    _, path, _ = reporter.backups[-1]
    import h5py

    with h5py.File(path) as fh:
        names: list[str] = []
        fh.visit(names.append)
    assert any("optimizer" in n for n in names), names
    assert isinstance(classification_data, TrainData) and np.isfinite(reporter.epochs[-1][1]["loss"])


def test_findings_of_a_resumed_run_judge_the_whole_run(tmp_path, classification_data):
    """A plateau that spans the resume (6 flat epochs before it, 6 after) is found only with the earlier
    attempt's diagnostics history; without it the resumed run sees 6 flat epochs, too few to say."""
    spec = make_spec(classification_data, training={"epochs": 12, "batch_size": 16, "shuffle": False},
                     optimizer=FROZEN, diagnostics=FLAG_ONLY)
    first = _StopAtEpoch(6)
    train(spec, classification_data, first, tmp_path / "first")
    val_loss = {epoch: logs.get("val_loss") for epoch, logs in first.epochs}
    history = [{"epoch": epoch, **record, "val_loss": val_loss[epoch]}
               for epoch, record in first.diagnostics_records]
    assert [r["epoch"] for r in history] == [1, 2, 3, 4, 5, 6]

    codes = {}
    for name, given in (("with", history), ("without", [])):
        resume = _resume_from(first, tmp_path, name)
        resume.diagnostics_history = given
        reporter = InMemoryReporter()
        train(spec, classification_data, reporter, tmp_path / name, resume=resume)
        assert [e for e, _ in reporter.diagnostics_records] == list(range(7, 13))
        codes[name] = {code for code, _ in reporter.findings_by_key}
        if name == "with":
            plateau = reporter.findings_by_key[("plateau", None)]
    assert "plateau" in codes["with"] and "plateau" not in codes["without"]
    assert plateau["evidence"]["best_epoch"] == 1 and plateau["epoch"] == 12


def test_a_resumed_run_confirms_an_error_finding_with_the_earlier_attempts_history(tmp_path, classification_data):
    """lr_too_small found on epoch 6 (the first attempt's last) and again on epoch 7 is confirmed: with
    on_error stop the resumed run stops after its first epoch, as one unbroken run would have after epoch 2."""
    spec = make_spec(classification_data, training={"epochs": 12, "batch_size": 16, "shuffle": False},
                     optimizer=FROZEN, diagnostics=FLAG_ONLY)
    first = _StopAtEpoch(6)
    train(spec, classification_data, first, tmp_path / "first")
    val_loss = {epoch: logs.get("val_loss") for epoch, logs in first.epochs}
    resume = _resume_from(first, tmp_path, "b")
    resume.diagnostics_history = [{"epoch": epoch, **record, "val_loss": val_loss[epoch]}
                                  for epoch, record in first.diagnostics_records]
    stopping = make_spec(classification_data, training={"epochs": 12, "batch_size": 16, "shuffle": False},
                         optimizer=FROZEN)
    reporter = InMemoryReporter()
    result = train(stopping, classification_data, reporter, tmp_path / "second", resume=resume)
    assert result.stop_reason == "diagnosis" and result.error_code == "lr_too_small"
    assert [e for e, _ in reporter.epochs] == [7]


def test_a_backup_taken_as_a_diagnosis_stopped_the_run_resumes_to_that_stop(tmp_path, classification_data):
    spec = make_spec(classification_data, training={"epochs": 12, "batch_size": 16, "shuffle": False},
                     optimizer=FROZEN)
    first = InMemoryReporter()
    train(spec, classification_data, first, tmp_path / "first")
    assert first.result.stop_reason == "diagnosis" and first.backups[-1][2]["stop_training"] is True
    resume = _resume_from(first, tmp_path, "b")
    resume.diagnostics_history = [{"epoch": epoch, **record, "val_loss": None}
                                  for epoch, record in first.diagnostics_records]
    second = InMemoryReporter()
    result = train(spec, classification_data, second, tmp_path / "second", resume=resume)
    # Not "completed": the worker that died before reporting the end does not turn the stop into a success.
    assert (result.stop_reason, result.error_code) == ("diagnosis", "lr_too_small") and second.epochs == []
