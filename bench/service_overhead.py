"""Training overhead through the whole service versus a bare Keras script (issue #8, benchmark 1).

Workload: bench/engine.py's (784-128-10 MLP, 60,000 synthetic samples, 3 epochs, batch 128, adam),
saved once as an `.npz`. Service side: a real stack (Postgres, Redis, gunicorn via bin/api, a warm
worker via bin/worker), the `.npz` uploaded once through the API, then per repeat one job POSTed with
diagnostics, preflight and checkpointing on, followed on its event stream until it ends. Bare side: `bench/bare_fit.py`
as a fresh process, paying its own TensorFlow import and loading the same `.npz`.

Figures, pair by pair (sides alternate), then medians:
- fit phase: the job's `timings.preflight_seconds + timings.fit_seconds` (the worker's own clock)
  versus the bare script's `model.fit` call. Target <= 1.05.
- whole job: POST to the stream's `end` event versus the bare process's start to exit (its
  TensorFlow import included). Target <= 1.0.

Run: ``.venv/bin/python bench/service_overhead.py [--repeats N]`` (or ``make bench-service``).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import requests  # noqa: E402

from bench.stack import Stack  # noqa: E402
from client.api import parse_sse  # noqa: E402

SAMPLES, FEATURES, CLASSES, EPOCHS, BATCH = 60_000, 784, 10, 3, 128
FIT_TARGET, WHOLE_TARGET = 1.05, 1.0


def write_data(path: Path) -> None:
    # The engine benchmark's data (bench/engine.py make_data), without importing TensorFlow here.
    rng = np.random.default_rng(0)
    x = rng.random((SAMPLES, FEATURES), dtype=np.float32)
    y = rng.integers(0, CLASSES, size=SAMPLES)
    np.savez(path, x_train=x, y_train=y)


def job_spec(dataset_id: str) -> dict:
    return {
        "name": "bench-service-overhead",
        "dataset": {"id": dataset_id, "validation_split": 0.0, "normalize": "none"},
        "model": {"input_shape": [FEATURES], "layers": [
            {"type": "dense", "units": 128, "activation": "relu"},
            {"type": "dense", "units": CLASSES, "activation": "softmax"}]},
        "loss": "sparse_categorical_crossentropy",
        "metrics": ["accuracy"],
        "optimizer": {"type": "adam", "learning_rate": 0.001},
        "callbacks": {"checkpoint": {"monitor": "loss", "mode": "min"}},
        # No seed: a seed switches on TensorFlow's op determinism, which the bare script does not use.
        "training": {"epochs": EPOCHS, "batch_size": BATCH, "shuffle": True},
        "diagnostics": {"enabled": True, "preflight": True},
    }


def events(session: requests.Session, base: str, job_id: str):
    """The job's server-sent events as (event type, parsed data) pairs, up to its `end`."""
    with session.get(f"{base}/v1/jobs/{job_id}/events", stream=True, timeout=(10, 600)) as resp:
        resp.raise_for_status()
        for event in parse_sse(resp.iter_lines(decode_unicode=True)):
            yield event.event, event.data
            if event.event == "end":
                return


def run_service(session: requests.Session, base: str, dataset_id: str) -> dict:
    # The end is observed on the job's event stream, not by polling: a poller would take CPU from the
    # worker on this two-core machine while it trains.
    began = time.perf_counter()
    resp = session.post(f"{base}/v1/jobs", json=job_spec(dataset_id), timeout=30)
    resp.raise_for_status()
    job_id = resp.json()["id"]
    final = None
    for kind, data in events(session, base, job_id):
        if kind == "end":
            final = data["status"]
    whole = time.perf_counter() - began
    if final != "succeeded":
        job = session.get(f"{base}/v1/jobs/{job_id}", timeout=30).json()
        raise RuntimeError(f"job {job_id} ended {final}: {job.get('error')}")
    t = session.get(f"{base}/v1/jobs/{job_id}", timeout=30).json()["timings"]
    return {"whole": whole, "fit": t["preflight_seconds"] + t["fit_seconds"], "timings": t}


def run_bare(data: Path) -> dict:
    began = time.perf_counter()
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "bare_fit.py"), str(data)], check=True,
                         capture_output=True, text=True, env={"TF_CPP_MIN_LOG_LEVEL": "2", "PATH": "/usr/bin:/bin"})
    whole = time.perf_counter() - began
    line = json.loads(out.stdout.strip().splitlines()[-1])
    return {"whole": whole, "fit": line["fit_seconds"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-service-"))
    data = tmp / "bench.npz"
    write_data(data)
    with Stack("service_overhead", env={"TRAINYARD_MAX_UPLOAD_BYTES": str(1 << 30)}) as stack:
        stack.start(api=True, worker=True)
        session = requests.Session()
        session.headers.update(stack.auth_headers("bench"))
        with data.open("rb") as fh:
            resp = session.post(f"{stack.base_url}/v1/datasets", files={"file": ("bench.npz", fh)}, timeout=300)
        resp.raise_for_status()
        dataset_id = resp.json()["id"]
        print("warm-up ...", flush=True)
        run_service(session, stack.base_url, dataset_id)
        run_bare(data)
        rows = []
        for repeat in range(1, args.repeats + 1):
            if repeat % 2:  # alternate which side goes first so drift favours neither
                svc, bare = run_service(session, stack.base_url, dataset_id), run_bare(data)
            else:
                bare, svc = run_bare(data), run_service(session, stack.base_url, dataset_id)
            rows.append((svc, bare))
            print(f"repeat {repeat}: fit service {svc['fit']:6.3f} s bare {bare['fit']:6.3f} s "
                  f"ratio {svc['fit'] / bare['fit']:5.3f} | whole service {svc['whole']:6.3f} s "
                  f"bare {bare['whole']:6.3f} s ratio {svc['whole'] / bare['whole']:5.3f} | {svc['timings']}",
                  flush=True)
    fit_ratio = statistics.median(s["fit"] / b["fit"] for s, b in rows)
    whole_ratio = statistics.median(s["whole"] / b["whole"] for s, b in rows)
    med = {k: statistics.median(r[i][k] for r in rows) for i, k in ((0, "fit"), (0, "whole"))}
    bare_med = {k: statistics.median(r[1][k] for r in rows) for k in ("fit", "whole")}
    print(f"{'median':12}{'service':>10}{'bare':>10}{'ratio':>8}{'target':>8}")
    print(f"{'fit phase':12}{med['fit']:10.3f}{bare_med['fit']:10.3f}{fit_ratio:8.3f}{FIT_TARGET:8.2f}")
    print(f"{'whole job':12}{med['whole']:10.3f}{bare_med['whole']:10.3f}{whole_ratio:8.3f}{WHOLE_TARGET:8.2f}")
    print(json.dumps({"benchmark": "service_overhead", "repeats": len(rows),
                      "fit_ratio": round(fit_ratio, 4), "whole_ratio": round(whole_ratio, 4),
                      "service_fit_s": round(med["fit"], 4), "bare_fit_s": round(bare_med["fit"], 4),
                      "service_whole_s": round(med["whole"], 4), "bare_whole_s": round(bare_med["whole"], 4),
                      "fit_target": FIT_TARGET, "whole_target": WHOLE_TARGET,
                      "within_target": fit_ratio <= FIT_TARGET and whole_ratio <= WHOLE_TARGET}))


if __name__ == "__main__":
    main()
