"""The engine's Keras callbacks, one per module."""

from .backup import EpochBackup
from .checkpoint import BestCheckpoint, save_atomically
from .early_stopping import EarlyStopping
from .reduce_lr import ReduceLROnPlateau
from .reporting import EpochReporter, current_learning_rate
from .state import RunState, call_reporter
from .stop_request import StopRequest
from .terminate_on_nan import TerminateOnNaN

__all__ = [
    "BestCheckpoint",
    "EpochBackup",
    "EarlyStopping",
    "EpochReporter",
    "ReduceLROnPlateau",
    "RunState",
    "StopRequest",
    "TerminateOnNaN",
    "call_reporter",
    "current_learning_rate",
    "save_atomically",
]
