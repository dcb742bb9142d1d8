"""Training diagnostics: per-variable dynamics measured each epoch, and findings with advice.

- ``probe``: which layer each trainable variable belongs to; gradient/weight/update norms on a fixed
  probe batch (one compiled function).
- ``callback``: ``TrainingDiagnostics``, the Keras callback that measures and reports every epoch.
- ``findings``: the rules, pure Python/NumPy.
- ``data_stats``: scale of the raw training data.
"""

from .callback import TrainingDiagnostics
from .data_stats import scale_stats
from .findings import RunContext, analyze_setup
from .probe import ProbeMeasure, probe_batch, trainable_variables

__all__ = ["ProbeMeasure", "RunContext", "TrainingDiagnostics", "analyze_setup", "probe_batch",
           "scale_stats", "trainable_variables"]
