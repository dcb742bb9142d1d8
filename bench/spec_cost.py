"""What the worst job and sweep bodies cost to validate, and the costliest accepted specs to build.

    .venv/bin/python bench/spec_cost.py                     # validation of every body in tests/worst_bodies.py
    .venv/bin/python bench/spec_cost.py --code /work/main   # the same bodies against another checkout
    .venv/bin/python bench/spec_cost.py --build             # build + one epoch of the costliest accepted specs

Validation: each body is written to a file and validated in a fresh process of the chosen checkout
(json.loads, then validate_spec or validate_sweep, as the API does), with a timeout, so an old validator
that takes minutes does not hold the run; CPU seconds are reported (this machine is shared).

Build: each spec sits at one of the caps (trainyard/spec/limits.py, bounds.py); the engine's train() runs it
for one epoch on random data of the spec's shape in a fresh process, diagnostics and preflight on, and the
wall time and peak RSS of that process are reported.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.worst_bodies import BODIES, encode  # noqa: E402

VALIDATE = r"""
import json, sys, time
path, kind = sys.argv[1], sys.argv[2]
from trainyard.spec import SpecError, SpecLimits, validate_spec
from trainyard.sweeps.config import SweepError, validate_sweep
data = open(path, "rb").read()
began = time.process_time()
try:
    raw = json.loads(data)
    if kind == "job":
        validate_spec(raw)
    else:
        validate_sweep(raw, datasets=None, limits=SpecLimits(), max_trials_limit=200)
    answer = "accepted"
except (SpecError, SweepError) as exc:
    answer = f"422, {len(exc.errors)} errors"
except (ValueError, RecursionError) as exc:
    answer = f"400 ({type(exc).__name__})"
except Exception as exc:
    answer = f"500 ({type(exc).__name__})"
print(json.dumps({"cpu": time.process_time() - began, "answer": answer}))
"""

BUILD = r"""
import json, os, resource, sys, tempfile, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np
from trainyard.spec import DatasetInfo, validate_spec
from workers.trainer import InMemoryReporter, TrainData, train
case = json.loads(sys.argv[1])
shape, n = tuple(case["shape"]), case["batch"]
info = DatasetInfo("ds_" + "b" * 32, shape, "classification", 2, False, False, (), n)
raw = {"dataset": {"id": info.id, "validation_split": 0}, "loss": "sparse_categorical_crossentropy",
       "training": {"epochs": 1, "batch_size": n}, **case["spec"]}
spec = validate_spec(raw, datasets=lambda i: info)
rng = np.random.default_rng(0)
x = rng.integers(0, 100, size=(n, *shape)) if case.get("ints") else rng.normal(size=(n, *shape)).astype("float32")
y = rng.integers(0, 2, size=n)
began = time.perf_counter()
with tempfile.TemporaryDirectory() as tmp:
    result = train(spec, TrainData(x, y), InMemoryReporter(), tmp)
print(json.dumps({"wall": time.perf_counter() - began, "stop_reason": result.stop_reason, "timings": result.timings,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def dense(units: int, activation: str = "softmax") -> dict:
    return {"type": "dense", "units": units, "activation": activation}


# Each at one cap of the defaults (30e9 multiply-adds and 100e6 values a step, 2,048 recurrent steps,
# 2e11 initialisation operations, 100 boundaries, 50e6 parameters, 64 layers); the batch is the data set,
# so one epoch is one step.
BUILDS = {
    "multiply-adds (dense 4096x4096, batch 1780)": {
        "shape": [4096], "batch": 1780, "spec": {"model": {"input_shape": [4096], "layers": [
            dense(4096, "relu"), dense(2)]}}},
    "multiply-adds and values (conv 3x3x32x64 'same' on 64x64, batch 250)": {
        "shape": [64, 64, 32], "batch": 250, "spec": {"model": {"input_shape": [64, 64, 32], "layers": [
            {"type": "conv2d", "filters": 64, "kernel_size": 3, "padding": "same"},
            {"type": "global_average_pooling2d"}, dense(2)]}}},
    "pooling (50x50 window at stride 1 on 100x100x8, batch 29)": {
        "shape": [100, 100, 8], "batch": 29, "spec": {"model": {"input_shape": [100, 100, 8], "layers": [
            {"type": "max_pooling2d", "pool_size": 50, "strides": 1, "padding": "same"},
            {"type": "global_average_pooling2d"}, dense(2)]}}},
    "values (2048 filters on 64x64, batch 11)": {
        "shape": [64, 64, 1], "batch": 11, "spec": {"model": {"input_shape": [64, 64, 1], "layers": [
            {"type": "conv2d", "filters": 2048, "kernel_size": 1}, {"type": "global_average_pooling2d"},
            dense(2)]}}},
    "recurrent steps (simple_rnn over 2048 steps, batch 1)": {
        "shape": [2048, 1], "batch": 1, "spec": {"model": {"input_shape": [2048, 1], "layers": [
            {"type": "simple_rnn", "units": 1}, dense(2)]}}},
    "recurrent steps (bidirectional lstm 64 over 1024 steps, batch 8)": {
        "shape": [1024, 8], "batch": 8, "spec": {"model": {"input_shape": [1024, 8], "layers": [
            {"type": "bidirectional", "layer": {"type": "lstm", "units": 64}}, dense(2)]}}},
    "layers (64 dense layers, batch 32)": {
        "shape": [64], "batch": 32, "spec": {"model": {"input_shape": [64], "layers": [
            dense(64, "relu")] * 63 + [dense(2)]}}},
    "initialisation (12 dense 2000-unit layers with orthogonal kernels, 1.8e11 of 2e11)": {
        "shape": [64], "batch": 32, "spec": {"model": {"input_shape": [64], "layers": [
            {"type": "dense", "units": 2000, "activation": "relu", "kernel_initializer": "orthogonal"}] * 12
            + [dense(2)]}}},
    "boundaries (piecewise_constant with 100, per step)": {
        "shape": [4], "batch": 8, "spec": {"model": {"input_shape": [4], "layers": [dense(2)]},
                                           "schedule": {"type": "piecewise_constant", "unit": "step",
                                                        "boundaries": list(range(1, 101)), "values": [0.01] * 101}}},
    "parameters (dense 5000x9990, batch 32)": {
        "shape": [5000], "batch": 32, "spec": {"model": {"input_shape": [5000], "layers": [
            dense(9990, "relu"), dense(2)]}}},
    "parameters (embedding 9,999,000 x 5, batch 32)": {
        "shape": [16], "batch": 32, "ints": True, "spec": {"model": {"input_shape": [16], "layers": [
            {"type": "embedding", "input_dim": 9_999_000, "output_dim": 5},
            {"type": "global_average_pooling1d"}, dense(2)]}}},
}


def run(code: Path, script: str, args: list[str], timeout: float) -> dict | None:
    env = {**os.environ, "PYTHONPATH": str(code), "TF_CPP_MIN_LOG_LEVEL": "3"}
    try:
        out = subprocess.run([sys.executable, "-c", script, *args], env=env, cwd=code, capture_output=True,
                             text=True, timeout=timeout, check=True).stdout
    except subprocess.TimeoutExpired:
        return None
    except subprocess.CalledProcessError as exc:
        return {"error": exc.stderr.strip().splitlines()[-1] if exc.stderr.strip() else f"exit {exc.returncode}"}
    return json.loads(out.strip().splitlines()[-1])


def validation(code: Path, timeout: float) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for body in BODIES:
            path = Path(tmp) / "body.json"
            data = encode(body)
            path.write_bytes(data)
            began = time.perf_counter()
            got = run(code, VALIDATE, [str(path), "job" if body.path == "/v1/jobs" else "sweep"], timeout)
            row = {"body": body.name, "path": body.path, "kib": round(len(data) / 1024),
                   "wall": round(time.perf_counter() - began, 2)}
            row.update({"cpu": None, "answer": f"over {timeout:.0f} s"} if got is None else got)
            rows.append(row)
            cpu = "-" if row.get("cpu") is None else f"{row['cpu']:.3f}"
            print(f"{body.path:11s} {body.name:40s} {row['kib']:6d} KiB  cpu {cpu:>8s} s  {row.get('answer', row.get('error'))}",
                  flush=True)
    return rows


def builds(code: Path, timeout: float) -> list[dict]:
    rows = []
    for name, case in BUILDS.items():
        got = run(code, BUILD, [json.dumps(case)], timeout)
        row = {"spec": name, **({"wall": None, "error": f"over {timeout:.0f} s"} if got is None else got)}
        rows.append(row)
        if "wall" in row and row.get("wall") is not None:
            print(f"{name:70s} {row['wall']:6.1f} s  peak RSS {row['peak_rss_mb']:6.0f} MB  {row['stop_reason']}  "
                  f"{row['timings']}", flush=True)
        else:
            print(f"{name:70s} {row.get('error')}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--code", type=Path, default=ROOT, help="the checkout to measure (default: this one)")
    parser.add_argument("--build", action="store_true", help="build the costliest accepted specs instead")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per body or build")
    args = parser.parse_args()
    if args.build:
        rows = builds(args.code, args.timeout or 900)
    else:
        rows = validation(args.code, args.timeout or 60)
    print(json.dumps({"code": str(args.code), "build" if args.build else "validation": rows}))


if __name__ == "__main__":
    main()
