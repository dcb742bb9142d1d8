"""The training engine: pure Keras 3 (TensorFlow backend), no Flask, Celery or database.

``train(spec, data, reporter, workdir) -> TrainResult`` consumes the normalised job spec of
docs/design.md and reports through the ``Reporter`` interface.

Process-wide effects a worker should know about:

- ``training.seed`` calls ``keras.utils.set_random_seed`` (Python, NumPy, TF) and
  ``tf.config.experimental.enable_op_determinism()``. Determinism cannot be switched off again, so it
  stays on for every later job in the process (Keras' ``jit_compile="auto"`` then resolves to False).
- ``mixed_precision`` and ``jit_compile`` only take effect when a GPU is visible; on CPU they are
  no-ops (``started()`` info reports the effective values). The global dtype policy is restored after
  the model is built.
- Call ``warm_up()`` once per worker process, after any fork: a process that ran TensorFlow ops and
  then forks hangs in the child's first fit.
"""

from .engine import train, warm_up
from .layers import build_model
from .types import InMemoryReporter, Reporter, TrainData, TrainResult, describe_error

__all__ = ["InMemoryReporter", "Reporter", "TrainData", "TrainResult", "build_model", "describe_error", "train",
           "warm_up"]
