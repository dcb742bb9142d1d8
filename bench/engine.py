"""Engine overhead benchmark: ``train()`` versus a bare ``model.fit`` on the same workload.

Workload: 784-128-10 relu/softmax MLP, 60,000 synthetic samples (uniform inputs, labels 0-9, fixed
seed), 3 epochs, batch 128, adam, sparse_categorical_crossentropy + accuracy, no validation. Both sides
run in this process, alternating, after one warm-up each; the fit phase is timed (the engine's
``epoch_end`` seconds summed, the bare side's ``fit`` call wall time). Prints a table and a final JSON
line. Run: ``.venv/bin/python bench/engine.py [--repeats N]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from workers.trainer import InMemoryReporter, TrainData, train  # noqa: E402

SAMPLES, FEATURES, CLASSES = 60_000, 784, 10
EPOCHS, BATCH, SEED = 3, 128, 0

SPEC = {
    "version": 1,
    "name": "bench-mlp",
    "dataset": {"id": "synthetic", "validation_split": 0.0, "normalize": "none",
                "normalize_targets": "none"},
    "model": {"input_shape": [FEATURES], "layers": [
        {"type": "dense", "units": 128, "activation": "relu", "use_bias": True,
         "kernel_initializer": "glorot_uniform", "bias_initializer": "zeros",
         "kernel_regularizer": None, "bias_regularizer": None},
        {"type": "dense", "units": CLASSES, "activation": "softmax", "use_bias": True,
         "kernel_initializer": "glorot_uniform", "bias_initializer": "zeros",
         "kernel_regularizer": None, "bias_regularizer": None},
    ]},
    "loss": "sparse_categorical_crossentropy",
    "metrics": ["accuracy"],
    "optimizer": {"type": "adam", "learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999,
                  "epsilon": 1e-07, "amsgrad": False, "clipnorm": None, "clipvalue": None},
    "schedule": {"type": "constant"},
    "callbacks": {"early_stopping": None, "checkpoint": {"monitor": "loss", "mode": "min"},
                  "reduce_lr_on_plateau": None},
    "training": {"epochs": EPOCHS, "batch_size": BATCH, "shuffle": True, "seed": SEED,
                 "mixed_precision": False, "jit_compile": False},
    "limits": {"max_runtime_seconds": None},
    "diagnostics": {"enabled": False},
}


def make_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(SEED)
    x = rng.random((SAMPLES, FEATURES), dtype=np.float32)
    y = rng.integers(0, CLASSES, size=SAMPLES)
    return x, y


class _FitTimer(InMemoryReporter):
    """Times the fit phase from the end of ``started`` to the last epoch row (includes tracing and
    checkpoint saves, excludes model building and the final report)."""

    def started(self, info):
        super().started(info)
        self.fit_began = time.perf_counter()

    def epoch_end(self, epoch, logs):
        super().epoch_end(epoch, logs)
        self.fit_ended = time.perf_counter()


def run_engine(x, y) -> tuple[float, float]:
    """(fit phase, whole call) seconds."""
    reporter = _FitTimer()
    with tempfile.TemporaryDirectory(prefix="bench-engine-") as tmp:
        began = time.perf_counter()
        result = train(SPEC, TrainData(x, y), reporter, tmp)
        whole = time.perf_counter() - began
    assert result.stop_reason == "completed", result
    return reporter.fit_ended - reporter.fit_began, whole


def run_bare(x, y) -> tuple[float, float]:
    """(fit phase, whole script from seeding to the end of fit) seconds."""
    script_began = time.perf_counter()
    keras.utils.set_random_seed(SEED)
    model = keras.Sequential([
        keras.Input(shape=(FEATURES,)),
        keras.layers.Dense(128, activation="relu"),
        keras.layers.Dense(CLASSES, activation="softmax"),
    ])
    # jit_compile=False like the engine on CPU (once a seeded job enabled op determinism, Keras'
    # "auto" resolves to False anyway; explicit keeps the comparison about the engine, not XLA).
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  jit_compile=False)
    began = time.perf_counter()
    model.fit(x, y, batch_size=BATCH, epochs=EPOCHS, verbose=0)
    ended = time.perf_counter()
    return ended - began, ended - script_began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--side", choices=("engine", "bare"),
                        help="run one side once and exit (to time whole processes side by side)")
    args = parser.parse_args()
    x, y = make_data()
    if args.side:
        fit_s, whole_s = (run_engine if args.side == "engine" else run_bare)(x, y)
        print(json.dumps({"benchmark": "engine", "side": args.side, "fit_seconds": round(fit_s, 4),
                          "whole_seconds": round(whole_s, 4)}))
        return
    print("warm-up ...", flush=True)
    run_engine(x, y)
    run_bare(x, y)
    rows = []
    for repeat in range(1, args.repeats + 1):
        (engine_fit, engine_all), (bare_fit, bare_all) = run_engine(x, y), run_bare(x, y)
        rows.append((engine_fit, bare_fit, engine_all, bare_all))
        print(f"repeat {repeat}: fit engine {engine_fit:7.3f} s  bare {bare_fit:7.3f} s  ratio "
              f"{engine_fit / bare_fit:5.3f} | whole engine {engine_all:7.3f} s  bare {bare_all:7.3f} s  "
              f"ratio {engine_all / bare_all:5.3f}", flush=True)
    # Ratios pair by pair (each pair ran back to back), then the median: robust to machine drift.
    fit_ratio = statistics.median(r[0] / r[1] for r in rows)
    whole_ratio = statistics.median(r[2] / r[3] for r in rows)
    med = [statistics.median(r[i] for r in rows) for i in range(4)]
    print(f"{'median':9}{'engine':>10}{'bare':>10}{'ratio':>8}")
    print(f"{'fit':9}{med[0]:10.3f}{med[1]:10.3f}{fit_ratio:8.3f}")
    print(f"{'whole':9}{med[2]:10.3f}{med[3]:10.3f}{whole_ratio:8.3f}")
    print(json.dumps({"benchmark": "engine", "engine_seconds": round(med[0], 4), "bare_seconds": round(med[1], 4),
                      "ratio": round(fit_ratio, 4), "whole_ratio": round(whole_ratio, 4), "repeats": len(rows)}))


if __name__ == "__main__":
    main()
