"""Why a run stopped: the one list of stop reasons, shared by the trainer, the worker and the lifecycle.

The values are API contract (a job's `stop_reason`, openapi.yaml), so they never change. Standard library
only: the pure-Keras trainer (workers/trainer) imports this module and nothing else of the domain but the
catalogue of Keras names.
"""
from __future__ import annotations

from enum import StrEnum


class StopReason(StrEnum):
    # The run ended well: its best checkpoint is the job's result.
    COMPLETED = "completed"
    EARLY_STOPPING = "early_stopping"
    MAX_RUNTIME = "max_runtime"
    # A sweep's trial doing worse than the median of the finished ones (before sweeps ran on Optuna; old
    # jobs keep it): it ends well.
    SWEEP_EARLY_STOPPED = "sweep_early_stopped"
    # A sweep's trial its Optuna pruner stopped (median, successive halving, Hyperband): it ends well.
    SWEEP_PRUNED = "sweep_pruned"
    CANCELLED = "cancelled"
    # Stop now and resume later from the last backup (the worker is shutting down or lost the lease):
    # the run is not over, and no job ever ends with this reason.
    INTERRUPTED = "interrupted"
    # The run failed (trainyard/lifecycle.py gives each its error code).
    NAN_LOSS = "nan_loss"
    NO_GRADIENTS = "no_gradients"
    # A confirmed error finding ended the run (diagnostics.on_error "stop"); its code is the job's error code.
    DIAGNOSIS = "diagnosis"
    ERROR = "error"

    @property
    def ends_well(self) -> bool:
        """Whether the run's best checkpoint is its result (it must load, and gets its export)."""
        return self in _ENDS_WELL

    @property
    def requestable(self) -> bool:
        """Whether a reporter may ask the trainer to stop for this reason (`Reporter.should_stop`)."""
        return self in _REQUESTABLE

    @classmethod
    def parse(cls, value: object) -> StopReason | None:
        """The member with this value, or None (Python 3.11's `in` refuses a plain string)."""
        try:
            return cls(value)
        except ValueError:
            return None


_ENDS_WELL = frozenset({StopReason.COMPLETED, StopReason.EARLY_STOPPING, StopReason.MAX_RUNTIME,
                        StopReason.SWEEP_EARLY_STOPPED, StopReason.SWEEP_PRUNED})
_REQUESTABLE = frozenset({StopReason.CANCELLED, StopReason.MAX_RUNTIME, StopReason.INTERRUPTED,
                          StopReason.SWEEP_EARLY_STOPPED, StopReason.SWEEP_PRUNED})
