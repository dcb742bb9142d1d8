"""Start latency with a warm worker (issue #8, benchmark 2).

A real stack (Postgres, Redis, gunicorn via bin/api, one warm worker via bin/worker). Per job, one at a
time so the worker is idle when the job arrives: POST a tiny model's spec (builtin:digits, 64-32-10
MLP, 2 epochs), then follow `GET /v1/jobs/{id}/events` (Server-Sent Events) and note when it says
`running` and when epoch 1's metrics arrive; then wait for its `end`.
Baseline, measured in this run: a bare in-process `fit` of one epoch of the same freshly built model on
the same data in a warm process (TensorFlow imported, earlier fits done), as many times.

Figures: POST -> running p50 (target <= 50 ms) and POST -> first epoch visible p50 versus the bare fit's
p50 (target <= 2x). Both service figures include the event's trip through Postgres' NOTIFY and the
stream, as any client sees them; nothing polls, so the worker has the CPU to itself.

Run: ``.venv/bin/python bench/start_latency.py [--jobs N]`` (or ``make bench-latency``).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import requests  # noqa: E402

from bench.stack import Stack  # noqa: E402
from client.api import parse_sse  # noqa: E402

RUNNING_TARGET_MS, FIRST_EPOCH_TARGET = 50.0, 2.0
SPEC = {
    "name": "bench-start-latency",
    "dataset": {"id": "builtin:digits", "validation_split": 0.0, "normalize": "standardize"},
    "model": {"input_shape": [64], "layers": [{"type": "dense", "units": 32, "activation": "relu"},
                                               {"type": "dense", "units": 10, "activation": "softmax"}]},
    "loss": "sparse_categorical_crossentropy",
    "metrics": ["accuracy"],
    "optimizer": {"type": "adam", "learning_rate": 0.001},
    "callbacks": {"checkpoint": {"monitor": "loss", "mode": "min"}},
    "training": {"epochs": 2, "batch_size": 32},
}

# The baseline, run in its own warm process: the same data (the built-in digits' training split,
# standardised), the same model, compile and one epoch of fit timed per repeat.
BARE = r"""
import json, sys, time
import keras, numpy as np
from trainyard.datasets import load_builtin
d = load_builtin("digits")
x, y = d["x_train"].astype("float32"), d["y_train"]
x = (x - x.mean(axis=0)) / np.where(x.std(axis=0) > 0, x.std(axis=0), 1)
def once():
    model = keras.Sequential([keras.Input(shape=(64,)), keras.layers.Dense(32, activation="relu"),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(0.001), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    began = time.perf_counter()
    model.fit(x, y, batch_size=32, epochs=1, shuffle=True, verbose=0)
    return time.perf_counter() - began
once()  # warm: the worker has run its warm-up job too
print(json.dumps([once() for _ in range(int(sys.argv[1]))]))
"""


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q * 100))  # linear interpolation: p50 is the median


def one_job(session: requests.Session, base: str) -> tuple[float, float]:
    """(POST -> running, POST -> first epoch) seconds, as the job's event stream reports them."""
    began = time.perf_counter()
    resp = session.post(f"{base}/v1/jobs", json=SPEC, timeout=30)
    resp.raise_for_status()
    job_id = resp.json()["id"]
    running = first = None
    with session.get(f"{base}/v1/jobs/{job_id}/events", stream=True, timeout=(10, 300)) as stream:
        stream.raise_for_status()
        for event in parse_sse(stream.iter_lines(decode_unicode=True)):
            now = time.perf_counter() - began
            if event.event == "status" and event.data["status"] != "queued" and running is None:
                running = now
            elif event.event == "epoch" and first is None:
                first = now
            elif event.event == "end":
                if event.data["status"] != "succeeded" or running is None or first is None:
                    raise RuntimeError(f"job {job_id} ended {event.data['status']}")
                return running, first
    raise RuntimeError(f"the event stream of job {job_id} ended without an end event")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=30)
    args = parser.parse_args()
    with Stack("start_latency") as stack:
        stack.start(api=True, worker=True)
        session = requests.Session()
        session.headers.update(stack.auth_headers("bench"))
        one_job(session, stack.base_url)  # the first job also loads scikit-learn's digits in the worker
        rows = []
        for i in range(args.jobs):
            rows.append(one_job(session, stack.base_url))
            print(f"job {i + 1:3}: running after {rows[-1][0] * 1000:7.1f} ms, first epoch after "
                  f"{rows[-1][1] * 1000:7.1f} ms", flush=True)
    out = subprocess.run([sys.executable, "-c", BARE, str(args.jobs)], cwd=ROOT, check=True, capture_output=True,
                         text=True, env={"TF_CPP_MIN_LOG_LEVEL": "2", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    bare = json.loads(out.stdout.strip().splitlines()[-1])
    running = [r[0] * 1000 for r in rows]
    first = [r[1] * 1000 for r in rows]
    bare_ms = [b * 1000 for b in bare]
    ratio = statistics.median(first) / statistics.median(bare_ms)
    print(f"{'ms':28}{'p50':>9}{'p90':>9}{'p99':>9}")
    for name, values in (("POST -> running", running), ("POST -> first epoch visible", first),
                         ("bare fit of one epoch", bare_ms)):
        print(f"{name:28}{percentile(values, .5):9.1f}{percentile(values, .9):9.1f}{percentile(values, .99):9.1f}")
    print(f"running p50 {statistics.median(running):.1f} ms (target <= {RUNNING_TARGET_MS:.0f}); first epoch p50 is "
          f"{ratio:.2f}x the bare fit's (target <= {FIRST_EPOCH_TARGET:.0f}x)")
    print(json.dumps({"benchmark": "start_latency", "jobs": len(rows),
                      "running_p50_ms": round(statistics.median(running), 2),
                      "running_p90_ms": round(percentile(running, .9), 2),
                      "first_epoch_p50_ms": round(statistics.median(first), 2),
                      "bare_fit_epoch_p50_ms": round(statistics.median(bare_ms), 2),
                      "first_epoch_ratio": round(ratio, 3),
                      "running_target_ms": RUNNING_TARGET_MS, "first_epoch_target": FIRST_EPOCH_TARGET,
                      "within_target": statistics.median(running) <= RUNNING_TARGET_MS and ratio <= FIRST_EPOCH_TARGET}))


if __name__ == "__main__":
    main()
