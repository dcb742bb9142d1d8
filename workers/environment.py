"""The reproducibility record of an attempt: what trained the job (issue #18, item 4).

`for_job(spec, worker_id)` answers "why does this run differ from last month's" from the job itself:
the Python, Keras, TensorFlow and NumPy versions, Trainyard's version and git commit, the device the job
trained on (CPU model or GPU names and count), the determinism in force (the job's seed and whether
TensorFlow's op determinism was on, which a seeded job switches on for its whole worker process) and the
worker. The parts that cannot change within a process are read once (`_static`); the record is written
with the job's claim (trainyard/lifecycle.py), so a job resumed elsewhere shows the attempt that ran last.
"""
from __future__ import annotations

import functools
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _checkout_head() -> str | None:
    """The HEAD commit of the checkout the code runs from (None in an image without .git)."""
    if not (ROOT / ".git").exists():
        return None
    try:
        done = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    out = done.stdout.strip()
    return out if done.returncode == 0 and len(out) == 40 else None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.lru_cache(maxsize=1)
def _static() -> dict[str, Any]:
    import keras
    import numpy
    import tensorflow as tf

    gpus = []
    for device in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(device)
        gpus.append(details.get("device_name") or device.name)
    return {
        "python": platform.python_version(),
        "keras": keras.__version__,
        "tensorflow": tf.__version__,
        "numpy": numpy.__version__,
        "trainyard": {"version": _version("trainyard"), "commit": _checkout_head()},
        "platform": platform.platform(),
        "cpu": {"model": _cpu_model(), "count": os.cpu_count()},
        "gpus": gpus,
    }


def _op_determinism_enabled() -> bool:
    """TensorFlow's own flag; not exported under tf.config (only `enable_op_determinism` is), so read from
    the module that defines both, and assume off where a release moved it."""
    try:
        from tensorflow.python.framework import config as tf_config
    except ImportError:
        return False
    check = getattr(tf_config, "is_op_determinism_enabled", None)
    return bool(check()) if check is not None else False


def for_job(spec: dict[str, Any], worker_id: str, git_commit: str | None = None) -> dict[str, Any]:
    """`git_commit`: the deployment's TRAINYARD_GIT_COMMIT, which wins over the checkout's HEAD."""
    static = _static()
    wanted = int((spec.get("resources") or {}).get("gpus") or 0)
    if wanted and static["gpus"]:
        names = static["gpus"][:wanted]
        device = {"kind": "gpu", "name": names[0] if len(set(names)) == 1 else ", ".join(names), "count": len(names)}
    else:
        device = {"kind": "cpu", "name": static["cpu"]["model"], "count": static["cpu"]["count"]}
    seed = (spec.get("training") or {}).get("seed")
    return {
        "python": static["python"],
        "keras": static["keras"],
        "tensorflow": static["tensorflow"],
        "numpy": static["numpy"],
        "trainyard": {**static["trainyard"], "commit": git_commit or static["trainyard"]["commit"]},
        "platform": static["platform"],
        "device": device,
        "determinism": {
            "seed": seed,
            # A seeded job turns op determinism on (workers/trainer/process_settings.py), for good.
            "op_determinism": seed is not None or _op_determinism_enabled(),
            # oneDNN's kernels may reorder float sums; TF turns them on by default on x86 CPUs.
            "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1") != "0",
        },
        "worker": {"id": worker_id, "hostname": platform.node()},
    }
