"""TRAINYARD_WORKER_THREADS bounds a worker's thread pools: TensorFlow's intra-op and inter-op pools (set before
its first op, in workers/runtime.py) and OpenMP's and OpenBLAS's (exported by bin/worker before they load).
The suite's workers run with 1 (tests/conftest.py), so the session worker shows it."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, subprocess_env
from trainyard.settings import Settings, SettingsError


def test_the_setting_defaults_to_tensorflows_own_choice_and_refuses_negatives() -> None:
    assert Settings.from_env({}).worker_threads == 0
    assert Settings.from_env({"TRAINYARD_WORKER_THREADS": "2"}).worker_threads == 2
    with pytest.raises(SettingsError, match="TRAINYARD_WORKER_THREADS must be at least 0"):
        Settings.from_env({"TRAINYARD_WORKER_THREADS": "-1"})


def test_limit_threads_sizes_both_tensorflow_pools_before_the_first_op() -> None:
    script = ("from workers.trainer.process_settings import limit_threads; import tensorflow as tf; "
              "limit_threads(1); tf.reduce_sum(tf.ones(3)).numpy(); "
              "print(tf.config.threading.get_intra_op_parallelism_threads(), "
              "tf.config.threading.get_inter_op_parallelism_threads())")
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=subprocess_env({}), capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split() == ["1", "1"]


def test_the_session_worker_runs_with_one_thread_per_pool(worker: Any) -> None:
    # (the running process: a worker that ended itself on purpose, EXIT_STUCK, may be being replaced)
    environ = dict(item.split("=", 1) for item in
                   Path(f"/proc/{worker.running().pid}/environ").read_text().split("\0") if "=" in item)
    assert environ["TRAINYARD_WORKER_THREADS"] == "1"
    assert environ["OMP_NUM_THREADS"] == "1" and environ["OPENBLAS_NUM_THREADS"] == "1"
    assert "TensorFlow warmed in" in worker.output() and "(threads per pool: 1)" in worker.output()
