"""A job asking for several GPUs trains under MirroredStrategy; on this CPU-only machine the same path runs
on two logical CPU devices that TensorFlow splits before it initialises (so: in a fresh subprocess)."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from tests.conftest import ROOT, subprocess_env

SCRIPT = textwrap.dedent('''
    import json, sys, tempfile
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    import keras, numpy as np
    from trainyard.datasets import load_builtin
    from trainyard.spec import SpecLimits
    from tests.trainer.specs import make_spec
    from workers.trainer import InMemoryReporter, TrainData, train
    from workers.trainer.distribute import NotEnoughDevices, strategy_for

    data = TrainData(**load_builtin("iris"))
    # No shuffling: tf.data's rewrite of a distributed dataset shuffles in another order, which is
    # correct but would hide what this test compares (the same batches on one device and on two).
    options = dict(dataset={"normalize": "standardize", "validation_split": 0.2},
                   optimizer={"type": "adam", "learning_rate": 0.01},
                   training={"epochs": 4, "batch_size": 16, "seed": 1, "shuffle": False})
    spec = make_spec(data, resources={"gpus": 2}, spec_limits=SpecLimits(resource_classes=("cpu", "gpu-2")),
                     **options)
    out = {}
    try:
        strategy_for(spec)  # no GPUs here: the worker path must refuse, not train on one device
    except NotEnoughDevices as exc:
        out["refused"] = str(exc)
    for name, devices in (("mirrored", ["/cpu:0", "/cpu:1"]), ("single", None)):
        one = make_spec(data, **options) if devices is None else spec
        reporter = InMemoryReporter()
        with tempfile.TemporaryDirectory() as tmp:
            result = train(one, data, reporter, tmp, devices=devices)
            model = keras.models.load_model(result.best_checkpoint)
            out[name] = {
                "replicas": reporter.info["replicas"],
                "steps_per_epoch": reporter.info["steps_per_epoch"],
                "losses": [logs["loss"] for _, logs in reporter.epochs],
                "stop_reason": result.stop_reason,
                "test_metrics": result.test_metrics,
                "checkpoints": len(reporter.checkpoints),
                "backups": [epoch for epoch, _, _ in reporter.backups],
                "diagnostics": len(reporter.diagnostics_records),
                "prediction_shape": list(model.predict(np.zeros((2, 4)), verbose=0).shape),
            }
    # optimizer.learning_rate "auto": the range test runs under the strategy too (its optimizer variables
    # are mirrored), and the run trains at the rate it chose.
    auto = make_spec(data, resources={"gpus": 2}, spec_limits=SpecLimits(resource_classes=("cpu", "gpu-2")),
                     **{**options, "optimizer": {"type": "adam", "learning_rate": "auto"}})
    reporter = InMemoryReporter()
    with tempfile.TemporaryDirectory() as tmp:
        result = train(auto, data, reporter, tmp, devices=["/cpu:0", "/cpu:1"])
    out["auto"] = {"stop_reason": result.stop_reason, "chosen": reporter.info["learning_rate_chosen"],
                   "rates": [logs["learning_rate"] for _, logs in reporter.epochs],
                   "curve": len(reporter.info["lr_range_test"]["curve"])}
    print("RESULT " + json.dumps(out))
''')


def test_mirrored_strategy_on_two_logical_devices_trains_like_one_device() -> None:
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=subprocess_env({}), capture_output=True,
                          text=True, timeout=300)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-4000:]
    out = json.loads(lines[0].removeprefix("RESULT "))
    mirrored, single = out["mirrored"], out["single"]
    assert "asks for 2 GPUs but this worker sees 0" in out["refused"]
    assert mirrored["replicas"] == 2 and single["replicas"] == 1
    assert mirrored["stop_reason"] == "completed" and len(mirrored["losses"]) == 4
    assert mirrored["losses"][-1] < mirrored["losses"][0] * 0.8  # it learns
    # batch_size is the global batch: the same steps per epoch, and with the same seed the same losses as
    # one device up to float reduction order (per-replica batches of 16 would halve the steps and differ).
    assert mirrored["steps_per_epoch"] == single["steps_per_epoch"]
    for a, b in zip(mirrored["losses"], single["losses"]):
        assert abs(a - b) <= 1e-4 * max(1.0, abs(b)), (mirrored["losses"], single["losses"])
    # Checkpoints and resume backups work under the strategy, and the best one loads as a plain model.
    assert mirrored["checkpoints"] >= 1 and mirrored["backups"] == [1, 2, 3, 4]
    assert mirrored["prediction_shape"] == [2, 3]
    # The probe takes gradients outside fit, which mirrored variables refuse: off, and said so in the log.
    assert mirrored["diagnostics"] == 0 and single["diagnostics"] == 4
    assert "diagnostics and preflight are off" in proc.stderr
    auto = out["auto"]
    assert auto["stop_reason"] == "completed" and auto["curve"] > 0
    assert all(abs(rate - auto["chosen"]) <= 1e-6 * auto["chosen"] for rate in auto["rates"]), auto
