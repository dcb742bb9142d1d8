"""The embedded default, exactly as `make run` starts it (`python -m trainyard.devserver`): SQLite, the
SQLite broker, artifacts in SQLite, a real API and a real worker; Ctrl-C stops everything."""
from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import requests

from tests.conftest import ROOT, free_port, subprocess_env, tiny_spec, wait_until


def _start(var: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = subprocess_env({"TRAINYARD_VAR_DIR": str(var), "TRAINYARD_PORT": str(port)})
    return subprocess.Popen([sys.executable, "-m", "trainyard.devserver"], cwd=ROOT, env=env,
                            stdout=open(log, "wb"), stderr=subprocess.STDOUT)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 0


def test_embedded_default_trains_and_downloads(tmp_path: Path) -> None:
    var, port, log = tmp_path / "var", free_port(), tmp_path / "run.log"
    proc = _start(var, port, log)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: "Trainyard is running" in log.read_text(errors="replace") or proc.poll() is not None,
                   120, 0.2, "make run's banner")
        output = log.read_text()
        assert proc.poll() is None, output
        token = (var / "dev-token").read_text().strip()
        assert url in output and token in output
        auth = {"Authorization": f"Bearer {token}"}
        resp = requests.post(f"{url}/v1/jobs", json=tiny_spec(), headers=auth, timeout=10)
        assert resp.status_code == 201, resp.text
        job_id = resp.json()["id"]

        def final(which: str) -> dict | None:
            body = requests.get(f"{url}/v1/jobs/{which}", headers=auth, timeout=5).json()
            return body if body["status"] in ("succeeded", "failed", "cancelled") else None

        job = wait_until(lambda: final(job_id), 120, 0.2, "the embedded job to end")
        assert job["status"] == "succeeded", (job, log.read_text()[-3000:])
        metrics = requests.get(f"{url}/v1/jobs/{job_id}/metrics", headers=auth, timeout=5).json()["epochs"]
        assert [m["epoch"] for m in metrics] == [1, 2, 3]
        best = requests.get(f"{url}/v1/jobs/{job_id}/checkpoints/best", headers=auth, timeout=10)
        assert best.status_code == 200 and best.content[:2] == b"PK"  # a .keras file is a zip archive
        assert (var / "trainyard.sqlite3").exists() and (var / "broker.sqlite3").exists()
        # A fork from the best checkpoint: its own copy of the weights, in SQLite's artifact store too.
        resp = requests.post(f"{url}/v1/jobs/{job_id}/fork", headers=auth, timeout=10,
                             json={"patch": {"training": {"epochs": 2}}, "from": "best"})
        assert resp.status_code == 201, resp.text
        fork_id = resp.json()["id"]
        assert resp.json()["parent"]["epoch"] == job["best"]["epoch"]
        forked = wait_until(lambda: final(fork_id), 120, 0.2, "the fork to end")
        assert forked["status"] == "succeeded" and forked["progress"]["epoch"] == 2, forked
        parent = requests.get(f"{url}/v1/jobs/{job_id}", headers=auth, timeout=5).json()
        assert parent["children"] == [fork_id]
    finally:
        _stop(proc)
    # A second run reuses the environment, the data and the token.
    proc = _start(var, port, tmp_path / "run2.log")
    try:
        wait_until(lambda: "Trainyard is running" in (tmp_path / "run2.log").read_text(errors="replace")
                   or proc.poll() is not None, 120, 0.2, "the second banner")
        assert (var / "dev-token").read_text().strip() == token
        listed = requests.get(f"{url}/v1/jobs", headers=auth, timeout=5).json()["jobs"]
        assert [j["id"] for j in listed] == [fork_id, job_id]
    finally:
        _stop(proc)
    # Everything it started is gone: nothing listens on the port any more (REUSEADDR ignores TIME_WAIT).
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
