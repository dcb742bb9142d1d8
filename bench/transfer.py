"""Checkpoint download and data-set upload, 200 MB each, through the API under gunicorn via bin/api,
versus a bare transfer of the same bytes from or to the same store, for both stores:

- database store (`TRAINYARD_ARTIFACT_URL=db`): bare = psycopg streaming the 4 MB chunk rows out with a
  server-side cursor, or inserting them in one transaction;
- folder store (`file://...`): bare = a plain file read or write in 1 MB blocks.

Every side computes the sha256 of the bytes it moves (the client checks the download's against the
recorded one). Peak memory: VmHWM of every gunicorn worker is reset before a transfer (Linux
clear_refs) and read after; the growth reported is the largest worker's peak minus its RSS before.
Targets (issue #8): HTTP >= 0.5 of bare, API peak RSS growth < 50 MB, both directions.
Run: ``make bench-transfer`` or ``.venv/bin/python bench/transfer.py [--mb 200 --rounds 2]``.
"""
from __future__ import annotations

import argparse
import hashlib
import http.client
import io
import json
import os
import statistics
import sys
import time
import urllib.parse
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import psycopg  # noqa: E402
import requests  # noqa: E402
from stack import Stack, reset_peak_rss, rss_kib  # noqa: E402

TARGET_RATIO, TARGET_RSS_MB = 0.5, 50.0
BLOCK = 1024 * 1024


def make_checkpoint_file(path: Path, size: int) -> None:
    rng = np.random.default_rng(0)
    with open(path, "wb") as fh:
        left = size
        while left > 0:
            n = min(4 * BLOCK, left)
            fh.write(rng.bytes(n))
            left -= n


def make_npz(path: Path, size: int) -> None:
    """A valid data set of about `size` bytes: float32 features, 64 per row, and integer labels."""
    rows = size // (64 * 4 + 4)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, 64), dtype=np.float32)
    y = rng.integers(0, 10, size=rows, dtype=np.int32)
    with open(path, "wb") as fh:
        np.savez(fh, x_train=x, y_train=y)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(BLOCK):
            digest.update(block)
    return digest.hexdigest()


class PeakRss:
    """Peak RSS growth of the API's worker processes over a `with` block, in MB."""

    def __init__(self, stack: Stack) -> None:
        self.pids = stack.api_worker_pids()
        self.growth_mb = 0.0

    def __enter__(self) -> "PeakRss":
        for pid in self.pids:
            reset_peak_rss(pid)
        self.before = {pid: rss_kib(pid)["VmRSS"] for pid in self.pids}
        return self

    def __exit__(self, *exc: object) -> None:
        self.growth_mb = max((rss_kib(pid)["VmHWM"] - self.before[pid]) / 1024 for pid in self.pids)


def seed_checkpoint(stack: Stack, headers: dict[str, str], path: Path) -> tuple[str, str, str]:
    """A finished job whose best checkpoint is `path`, stored through the service's own store."""
    from sqlalchemy import update

    from trainyard.db.models import Checkpoint, Job
    from trainyard.store import checkpoint_key, put_file

    spec = {"dataset": {"id": "builtin:iris"}, "model": {"input_shape": [4], "layers": [
        {"type": "dense", "units": 3, "activation": "softmax"}]}, "loss": "sparse_categorical_crossentropy",
        "training": {"epochs": 5}}
    resp = requests.post(stack.base_url + "/v1/jobs", json=spec, headers=headers, timeout=60)
    resp.raise_for_status()
    job_id = resp.json()["id"]
    key = checkpoint_key(job_id, 5)
    meta = put_file(stack.store(), key, path)
    with stack.db().session() as s:
        s.execute(update(Job).where(Job.id == job_id).values(status="succeeded", epoch=5, best_epoch=5,
                                                              best_monitor="loss", best_value=0.1))
        s.add(Checkpoint(job_id=job_id, epoch=5, monitor="loss", value=0.1, artifact_key=key,
                         size_bytes=meta.size, sha256=meta.sha256, is_best=True))
    return job_id, key, meta.sha256


def http_download(url: str, headers: dict[str, str]) -> tuple[float, str, int]:
    """GET with http.client reading into one reused buffer: the client adds as little as a file read."""
    parts = urllib.parse.urlsplit(url)
    digest = hashlib.sha256()
    buf = memoryview(bytearray(BLOCK))
    size = 0
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=300)
    try:
        conn.request("GET", parts.path, headers=headers)
        resp = conn.getresponse()
        if resp.status != 200:
            raise RuntimeError(f"download: {resp.status} {resp.read(500)!r}")
        while n := resp.readinto(buf):
            digest.update(buf[:n])
            size += n
    finally:
        conn.close()
    return time.perf_counter() - t0, digest.hexdigest(), size


def bare_db_read(dsn: str, key: str) -> tuple[float, str, int]:
    digest = hashlib.sha256()
    size = 0
    t0 = time.perf_counter()
    with psycopg.connect(dsn) as conn, conn.cursor(name="bare_read") as cur:
        cur.itersize = 1
        cur.execute("SELECT data FROM artifact_chunks WHERE key = %s ORDER BY seq", (key,))
        for (data,) in cur:
            digest.update(data)
            size += len(data)
    return time.perf_counter() - t0, digest.hexdigest(), size


def bare_file_read(path: Path) -> tuple[float, str, int]:
    digest = hashlib.sha256()
    size = 0
    t0 = time.perf_counter()
    with open(path, "rb") as fh:
        while block := fh.read(BLOCK):
            digest.update(block)
            size += len(block)
    return time.perf_counter() - t0, digest.hexdigest(), size


class MultipartFile(io.RawIOBase):
    """A multipart/form-data body with one file field, read from disk as it is sent (with a length, so
    requests sends Content-Length instead of chunks and never holds the body in memory)."""

    def __init__(self, path: Path, field: str, filename: str) -> None:
        self.boundary = uuid.uuid4().hex
        self.head = (f"--{self.boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; "
                     f"filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode()
        self.tail = f"\r\n--{self.boundary}--\r\n".encode()
        self.size = os.path.getsize(path)
        self.fh = open(path, "rb")
        self.parts = [io.BytesIO(self.head), self.fh, io.BytesIO(self.tail)]

    def __len__(self) -> int:
        return len(self.head) + self.size + len(self.tail)

    def read(self, n: int = -1) -> bytes:
        while self.parts:
            data = self.parts[0].read(n if n and n > 0 else BLOCK)
            if data:
                return data
            self.parts.pop(0)
        return b""

    def close(self) -> None:
        self.fh.close()
        super().close()


def http_upload(base: str, headers: dict[str, str], path: Path) -> tuple[float, dict]:
    body = MultipartFile(path, "file", "bench.npz")
    t0 = time.perf_counter()
    try:
        resp = requests.post(base + "/v1/datasets", data=body, timeout=600,
                             headers={**headers, "Content-Type": f"multipart/form-data; boundary={body.boundary}"})
    finally:
        body.close()
    elapsed = time.perf_counter() - t0
    if resp.status_code != 201:
        raise RuntimeError(f"upload: {resp.status_code} {resp.text[:500]}")
    return elapsed, resp.json()


def bare_db_insert(dsn: str, path: Path, chunk: int) -> tuple[float, str]:
    digest = hashlib.sha256()
    key = f"bench/bare/{uuid.uuid4().hex}"
    t0 = time.perf_counter()
    with psycopg.connect(dsn) as conn, open(path, "rb") as fh:
        seq = 0
        while data := fh.read(chunk):
            digest.update(data)
            conn.execute("INSERT INTO artifact_chunks (key, seq, data) VALUES (%s, %s, %s)", (key, seq, data))
            seq += 1
        conn.commit()
    elapsed = time.perf_counter() - t0
    with psycopg.connect(dsn) as conn:
        conn.execute("DELETE FROM artifact_chunks WHERE key = %s", (key,))
    return elapsed, digest.hexdigest()


def bare_file_write(src: Path, dest: Path) -> tuple[float, str]:
    digest = hashlib.sha256()
    t0 = time.perf_counter()
    with open(src, "rb") as fh, open(dest, "wb") as out:
        while block := fh.read(BLOCK):
            digest.update(block)
            out.write(block)
    elapsed = time.perf_counter() - t0
    dest.unlink()
    return elapsed, digest.hexdigest()


def run_store(store_name: str, args: argparse.Namespace, files: dict[str, Path]) -> dict[str, dict[str, float]]:
    mb = files["checkpoint"].stat().st_size / 1e6
    env = dict(item.split("=", 1) for item in args.set)
    folder = None
    with Stack(f"transfer_{store_name}", env=env) as stack:
        if store_name == "folder":
            folder = stack.tmp / "artifacts"
            stack.env["TRAINYARD_ARTIFACT_URL"] = f"file://{folder}"
        else:
            stack.env["TRAINYARD_ARTIFACT_URL"] = "db"
        stack.start_api()
        headers = stack.auth_headers("bench")
        job_id, key, sha = seed_checkpoint(stack, headers, files["checkpoint"])
        url = f"{stack.base_url}/v1/jobs/{job_id}/checkpoints/best"
        up_sha = sha256_file(files["dataset"])
        down, up = [], []
        for r in range(args.rounds):
            with PeakRss(stack) as peak:
                http_s, got, size = http_download(url, headers)
            assert got == sha and size == files["checkpoint"].stat().st_size, "download corrupted"
            if store_name == "db":
                bare_s, got, _ = bare_db_read(stack.pg_dsn(), key)
            else:
                bare_s, got, _ = bare_file_read(folder / key)
            assert got == sha
            down.append({"http_mb_s": mb / http_s, "bare_mb_s": mb / bare_s, "rss_mb": peak.growth_mb})
            print(f"{store_name:6} download round {r + 1}: http {mb / http_s:6.0f} MB/s  bare {mb / bare_s:6.0f} MB/s  "
                  f"ratio {bare_s / http_s:5.2f}  API peak RSS +{peak.growth_mb:.1f} MB", flush=True)

            up_mb = files["dataset"].stat().st_size / 1e6
            with PeakRss(stack) as peak:
                http_s, body = http_upload(stack.base_url, headers, files["dataset"])
            assert body["sha256"] == up_sha, "upload corrupted"
            if store_name == "db":
                bare_s, got = bare_db_insert(stack.pg_dsn(), files["dataset"], 4 * BLOCK)
            else:
                bare_s, got = bare_file_write(files["dataset"], folder / "bare-upload")
            assert got == up_sha
            requests.delete(f"{stack.base_url}/v1/datasets/{body['id']}", headers=headers, timeout=60)
            up.append({"http_mb_s": up_mb / http_s, "bare_mb_s": up_mb / bare_s, "rss_mb": peak.growth_mb})
            print(f"{store_name:6} upload   round {r + 1}: http {up_mb / http_s:6.0f} MB/s  bare {up_mb / bare_s:6.0f} MB/s  "
                  f"ratio {bare_s / http_s:5.2f}  API peak RSS +{peak.growth_mb:.1f} MB", flush=True)

    def summary(rows: list[dict[str, float]]) -> dict[str, float]:
        return {"http_mb_s": statistics.median(r["http_mb_s"] for r in rows),
                "bare_mb_s": statistics.median(r["bare_mb_s"] for r in rows),
                "ratio": statistics.median(r["http_mb_s"] / r["bare_mb_s"] for r in rows),
                "rss_mb": max(r["rss_mb"] for r in rows)}

    return {"download": summary(down), "upload": summary(up)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200, help="size of the checkpoint and the data set")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--stores", default="db,folder")
    parser.add_argument("--set", action="append", default=[], metavar="TRAINYARD_X=VALUE")
    args = parser.parse_args()
    size = args.mb * 1_000_000
    scratch = Path(os.environ.get("TMPDIR", "/tmp")) / f"trainyard-transfer-{os.getpid()}"
    scratch.mkdir()
    try:
        files = {"checkpoint": scratch / "best.keras", "dataset": scratch / "data.npz"}
        make_checkpoint_file(files["checkpoint"], size)
        make_npz(files["dataset"], size)
        print(f"checkpoint {files['checkpoint'].stat().st_size / 1e6:.0f} MB, data set "
              f"{files['dataset'].stat().st_size / 1e6:.0f} MB (.npz)", flush=True)
        results = {name: run_store(name, args, files) for name in args.stores.split(",")}
    finally:
        for p in scratch.iterdir():
            p.unlink()
        scratch.rmdir()

    print()
    print(f"{'store, direction':20}{'http MB/s':>10}{'bare MB/s':>10}{'ratio':>7}{'peak RSS +MB':>14}")
    for store, res in results.items():
        for direction, r in res.items():
            print(f"{store + ', ' + direction:20}{r['http_mb_s']:10.0f}{r['bare_mb_s']:10.0f}{r['ratio']:7.2f}"
                  f"{r['rss_mb']:14.1f}")
    print(f"targets: ratio >= {TARGET_RATIO}, peak RSS growth < {TARGET_RSS_MB:.0f} MB")
    print(json.dumps({
        "benchmark": "transfer", "mb": args.mb, "rounds": args.rounds,
        **{f"{store}_{direction}": {k: round(v, 2) for k, v in r.items()}
           for store, res in results.items() for direction, r in res.items()},
        "ratio_ok": all(r["ratio"] >= TARGET_RATIO for res in results.values() for r in res.values()),
        "rss_ok": all(r["rss_mb"] < TARGET_RSS_MB for res in results.values() for r in res.values()),
    }))


if __name__ == "__main__":
    main()
