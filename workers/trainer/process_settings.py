"""Process-level settings: thread pools, seeding and determinism, device-dependent precision and XLA."""

from __future__ import annotations

import contextlib
import functools
from typing import Iterator

import keras
import tensorflow as tf


def limit_threads(threads: int) -> None:
    """Size TensorFlow's intra-op and inter-op pools to ``threads`` each (0: TensorFlow's default, one per
    core). Call before the process runs its first op: the pools are made then, and fixed afterwards."""
    if threads > 0:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)


@functools.lru_cache(maxsize=1)
def gpu_available() -> bool:
    return bool(tf.config.list_physical_devices("GPU"))


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy, TF and Keras, and turn on TF op determinism.

    Both are process-wide: once a seeded job ran, every later job in the same worker process also runs
    with deterministic ops (which also makes Keras' ``jit_compile="auto"`` resolve to False). That is
    what reproducibility needs; it is idempotent and cheap on CPU.
    """
    keras.utils.set_random_seed(int(seed))
    tf.config.experimental.enable_op_determinism()


@contextlib.contextmanager
def dtype_policy(mixed_precision: bool) -> Iterator[bool]:
    """Build layers under ``mixed_float16`` when asked *and* a GPU exists; yields whether it is on.

    On CPU float16 is slower than float32, so the request is a no-op. The previous global policy is
    restored afterwards; layers keep the policy they were built with.
    """
    if not (mixed_precision and gpu_available()):
        yield False
        return
    previous = keras.mixed_precision.dtype_policy()
    keras.mixed_precision.set_dtype_policy("mixed_float16")
    try:
        yield True
    finally:
        keras.mixed_precision.set_dtype_policy(previous)


def resolve_jit_compile(requested: bool) -> bool:
    """XLA only when requested and a GPU exists; on CPU always False (explicitly, not Keras' "auto")."""
    return bool(requested) and gpu_available()
