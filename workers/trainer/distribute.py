"""Multi-device training: ``tf.distribute.MirroredStrategy`` for a job that asks for more than one GPU.

A job with ``resources.gpus`` = N > 1 trains on N devices of one worker: the model, its optimizer and
metrics are built and compiled inside ``strategy.scope()`` (so every variable is mirrored on each device),
and ``fit`` splits each batch across the replicas. ``training.batch_size`` is the *global* batch: each of
the N replicas computes batch_size / N samples per step and the gradients are summed (all-reduced) before
one optimizer step, so steps per epoch, the learning rate and the schedule mean what they mean on one
device. Everything else (a job without resources, 0 or 1 GPU) takes the single-device path unchanged.

The per-variable diagnostics probe and the preflight are off under a strategy (``without_probes``): both
take gradients of the model's variables outside ``fit``, which mirrored variables allow only inside a
replica context. Checkpoints, backups, resume, metrics and the stop checks work as on one device; a
checkpoint saved under a strategy loads as a plain single-device model.

Tests use the same path on a CPU-only machine by splitting the CPU into logical devices
(``tf.config.set_logical_device_configuration``) and passing them as ``devices``.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Iterator

import tensorflow as tf

logger = logging.getLogger(__name__)


class NotEnoughDevices(RuntimeError):
    pass


def visible_gpus() -> int:
    return len(tf.config.list_physical_devices("GPU"))


def replicas_requested(spec: dict) -> int:
    gpus = (spec.get("resources") or {}).get("gpus")
    return int(gpus) if gpus else 1


def strategy_for(spec: dict, devices: list[str] | None = None) -> tf.distribute.Strategy | None:
    """The job's MirroredStrategy, or None for the single-device path.

    ``devices`` overrides the devices to mirror on (tests: logical CPUs); by default the job's first N
    visible GPUs, where N is ``resources.gpus``.
    """
    wanted = replicas_requested(spec)
    if devices is None:
        if wanted <= 1:
            return None
        gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
        if len(gpus) < wanted:
            raise NotEnoughDevices(
                f"The job asks for {wanted} GPUs but this worker sees {len(gpus)}; check the worker's "
                "TRAINYARD_WORKER_GPUS and CUDA_VISIBLE_DEVICES.")
        devices = gpus[:wanted]
    if len(devices) <= 1:
        return None
    strategy = tf.distribute.MirroredStrategy(devices=list(devices))
    logger.info("training on %d replicas: %s", strategy.num_replicas_in_sync, ", ".join(devices))
    return strategy


def without_probes(spec: dict) -> dict:
    """The spec with diagnostics and preflight off, logged: mirrored variables have no gradient outside fit."""
    options = spec.get("diagnostics") or {}
    if options.get("enabled", True) or options.get("preflight", True):
        logger.warning("diagnostics and preflight are off for this job: they take gradients outside fit, "
                       "which MirroredStrategy's variables do not allow")
    return {**spec, "diagnostics": {"enabled": False, "preflight": False}}


@contextlib.contextmanager
def scope(strategy: tf.distribute.Strategy | None) -> Iterator[None]:
    if strategy is None:
        yield
        return
    with strategy.scope():
        yield
