"""From a fresh clone to a trained job with `make run` (issue #19): what a newcomer waits for.

Clones a commit of this repository into a temporary folder (no `.venv`, no `var/`), runs `make run` there
exactly as the README says, and times three moments from the start of `make run`:
- installed: the virtual environment is ready (`make` has touched its stamp),
- serving: the banner with the URL and token is printed (API and worker up),
- trained: the README walk-through's job, submitted with the printed token as soon as the banner shows,
  has succeeded.
pip's cache is whatever this machine has (warm on a developer's machine, which is what the figure is for);
`make run` never touches the network beyond the package index.

Run: ``.venv/bin/python bench/first_job.py [--rev REV] [--port PORT]``; run it for two revisions side by
side to compare (``--rev c810bc5`` versus ``--rev HEAD``).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# The README walk-through's job (section "Walk-through", step 2).
JOB = {
    "name": "digits-mlp",
    "dataset": {"id": "builtin:digits", "validation_split": 0.2, "normalize": "standardize"},
    "model": {"input_shape": [64],
              "layers": [{"type": "dense", "units": 64, "activation": "relu"},
                         {"type": "dropout", "rate": 0.1},
                         {"type": "dense", "units": 10, "activation": "softmax"}]},
    "loss": "sparse_categorical_crossentropy",
    "metrics": ["accuracy"],
    "optimizer": {"type": "adam", "learning_rate": 0.002},
    "callbacks": {"early_stopping": {"monitor": "val_loss", "patience": 5, "restore_best_weights": True}},
    "training": {"epochs": 25, "batch_size": 32, "seed": 0},
}


def _request(url: str, token: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Authorization": f"Bearer {token}",
                                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.load(resp)


def run(rev: str, port: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="trainyard-first-job-") as tmp:
        clone = Path(tmp) / "trainyard"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        subprocess.run(["git", "-C", str(clone), "checkout", "-q", rev], check=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINYARD_") and k != "VIRTUAL_ENV"}
        env["TRAINYARD_PORT"] = str(port)
        log = clone / "make-run.log"
        start = time.monotonic()
        proc = subprocess.Popen(["make", "run"], cwd=clone, env=env, stdout=open(log, "wb"),
                                stderr=subprocess.STDOUT, start_new_session=True)
        marks: dict[str, float] = {}
        try:
            while "serving" not in marks:
                if proc.poll() is not None:
                    raise SystemExit(f"make run exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
                if "installed" not in marks and (clone / ".venv" / ".installed-stamp").exists():
                    marks["installed"] = time.monotonic() - start
                if "Trainyard is running" in log.read_text(errors="replace"):
                    marks["serving"] = time.monotonic() - start
                time.sleep(0.05)
            marks.setdefault("installed", marks["serving"])
            token = (clone / "var" / "dev-token").read_text().strip()
            api = f"http://127.0.0.1:{port}"
            job = _request(f"{api}/v1/jobs", token, JOB)
            while job["status"] not in ("succeeded", "failed", "cancelled"):
                time.sleep(0.05)
                job = _request(f"{api}/v1/jobs/{job['id']}", token)
            if job["status"] != "succeeded":
                raise SystemExit(f"the walk-through job ended {job['status']}: {job.get('error')}")
            marks["trained"] = time.monotonic() - start
            venv_bytes = sum(f.stat().st_size for f in (clone / ".venv").rglob("*") if f.is_file())
            marks["venv_mb"] = venv_bytes / 2**20
            marks["accuracy"] = (job.get("test_metrics") or {}).get("accuracy", float("nan"))
        finally:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
    return marks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rev", default="HEAD")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.rev], check=True,
                         capture_output=True, text=True).stdout.strip()
    marks = run(rev, args.port)
    print(f"fresh clone of {rev}, `make run`: installed {marks['installed']:.1f} s, serving {marks['serving']:.1f} s, "
          f"walk-through job trained {marks['trained']:.1f} s (test accuracy {marks['accuracy']:.3f}); "
          f".venv {marks['venv_mb']:.0f} MB", flush=True)


if __name__ == "__main__":
    sys.exit(main())
