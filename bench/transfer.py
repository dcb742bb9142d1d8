"""Checkpoint download and data-set upload, 200 MB each, through the API under gunicorn via bin/api,
versus a bare transfer of the same bytes from or to the same store, for both stores:

- database store (`TRAINYARD_ARTIFACT_URL=db`): bare = psycopg streaming the 4 MB chunk rows out with a
  server-side cursor, or inserting them in one transaction;
- folder store (`file://...`): bare = a plain file read or write in 1 MB blocks;
- S3 store (`s3://...`) on moto's server on loopback (as tests/s3server.py runs it; in memory, a Python
  server, so far slower than S3 or MinIO): bare = botocore streaming the object out in 1 MB blocks, or
  putting it as a multipart upload of the store's part size.

The upload is sent twice a round: as the request body (what the client sends) and as a multipart form
(what `curl -F` sends), each against its own bare write.
Every side computes the sha256 of the bytes it moves (the client checks the download's against the
recorded one). Peak memory: VmHWM of every gunicorn worker is reset before a transfer (Linux
clear_refs) and read after; the growth reported is the largest worker's peak minus its RSS before.
Each upload side starts after `os.sync()`: neither pays for the writeback of the bytes the side before it
wrote (a bare write that came after an upload ran at 280-1,000 MB/s, the disk's writeback deciding which).
Targets (issue #8): HTTP >= 0.5 of bare, API peak RSS growth < 50 MB, both directions.
Run: ``make bench-transfer`` or ``.venv/bin/python bench/transfer.py [--mb 200 --rounds 2 --stores db,folder,s3]``.
"""
from __future__ import annotations

import argparse
import hashlib
import http.client
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
from stack import Proc, Stack, free_port, reset_peak_rss, rss_kib, wait_until  # noqa: E402

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


def http_upload(base: str, headers: dict[str, str], path: Path, *, form: bool) -> tuple[float, dict]:
    """POST the file with a Content-Length, sent from disk in 1 MB blocks read into one reused buffer (the
    client adds as little as a file read): as the body itself (`Content-Type: application/octet-stream`,
    the name in the query), as `client.Trainyard.upload_dataset` sends it, or with `form` as a
    multipart/form-data body with one file field, as `requests` with `files=` and `curl -F` send it."""
    parts = urllib.parse.urlsplit(base)
    if form:
        boundary = uuid.uuid4().hex
        head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"bench.npz\"\r\n"
                "Content-Type: application/octet-stream\r\n\r\n").encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        url, content_type = "/v1/datasets", f"multipart/form-data; boundary={boundary}"
    else:
        head = tail = b""
        url, content_type = "/v1/datasets?name=bench.npz", "application/octet-stream"
    length = len(head) + path.stat().st_size + len(tail)
    buf = bytearray(BLOCK)
    view = memoryview(buf)
    t0 = time.perf_counter()
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=600)
    try:
        conn.putrequest("POST", url)
        for name, value in {**headers, "Content-Type": content_type, "Content-Length": str(length)}.items():
            conn.putheader(name, value)
        conn.endheaders(head or None)
        with open(path, "rb", buffering=0) as fh:
            while n := fh.readinto(buf):
                conn.send(view[:n])
        if tail:
            conn.send(tail)
        resp = conn.getresponse()
        text = resp.read()
    finally:
        conn.close()
    elapsed = time.perf_counter() - t0
    if resp.status != 201:
        raise RuntimeError(f"upload: {resp.status} {text[:500]!r}")
    return elapsed, json.loads(text)


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


# moto accepts any credentials; botocore only needs some to sign requests (tests/s3server.py's).
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "trainyard-bench", "AWS_SECRET_ACCESS_KEY": "trainyard-bench",
                  "AWS_DEFAULT_REGION": "us-east-1"}
S3_BUCKET = "trainyard-bench"


class S3Server:
    """moto's S3 server on loopback, its own process (stopped on exit), and a botocore client of the bench's."""

    def __init__(self, log: Path) -> None:
        import botocore.session
        from botocore.config import Config

        self.url = f"http://127.0.0.1:{free_port()}"
        port = self.url.rsplit(":", 1)[1]
        self.proc = Proc([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", port],
                         {**os.environ, **S3_CREDENTIALS}, log)

        def up() -> bool:
            if not self.proc.alive():
                raise RuntimeError(f"moto exited:\n{self.proc.output()[-4000:]}")
            try:
                return requests.get(self.url + "/moto-api/", timeout=2).status_code < 500
            except requests.RequestException:
                return False

        wait_until(up, 60, 0.2, "the S3 server")
        self.client = botocore.session.get_session().create_client(
            "s3", endpoint_url=self.url, region_name=S3_CREDENTIALS["AWS_DEFAULT_REGION"],
            aws_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            config=Config(s3={"addressing_style": "path"}))

    def env(self) -> dict[str, str]:
        return {"TRAINYARD_ARTIFACT_URL": f"s3://{S3_BUCKET}/artifacts", "TRAINYARD_S3_ENDPOINT_URL": self.url,
                **S3_CREDENTIALS}

    def stop(self) -> None:
        self.proc.stop(10)


def bare_s3_read(server: S3Server, key: str) -> tuple[float, str, int]:
    digest = hashlib.sha256()
    size = 0
    t0 = time.perf_counter()
    body = server.client.get_object(Bucket=S3_BUCKET, Key=f"artifacts/{key}")["Body"]
    with body:
        for block in body.iter_chunks(BLOCK):
            digest.update(block)
            size += len(block)
    return time.perf_counter() - t0, digest.hexdigest(), size


def bare_s3_write(server: S3Server, path: Path) -> tuple[float, str]:
    """The same bytes as a multipart upload of the store's part size (trainyard.store.s3.PART_SIZE)."""
    from trainyard.store.s3 import PART_SIZE

    digest = hashlib.sha256()
    key = f"bare/{uuid.uuid4().hex}"
    t0 = time.perf_counter()
    upload_id = server.client.create_multipart_upload(Bucket=S3_BUCKET, Key=key)["UploadId"]
    parts = []
    with open(path, "rb") as fh:
        while data := fh.read(PART_SIZE):
            digest.update(data)
            number = len(parts) + 1
            etag = server.client.upload_part(Bucket=S3_BUCKET, Key=key, PartNumber=number, UploadId=upload_id,
                                             Body=data)["ETag"]
            parts.append({"ETag": etag, "PartNumber": number})
    server.client.complete_multipart_upload(Bucket=S3_BUCKET, Key=key, UploadId=upload_id,
                                            MultipartUpload={"Parts": parts})
    elapsed = time.perf_counter() - t0
    server.client.delete_object(Bucket=S3_BUCKET, Key=key)
    return elapsed, digest.hexdigest()


def run_store(store_name: str, args: argparse.Namespace, files: dict[str, Path]) -> dict[str, dict[str, float]]:
    mb = files["checkpoint"].stat().st_size / 1e6
    env = dict(item.split("=", 1) for item in args.set)
    folder = s3 = None
    with Stack(f"transfer_{store_name}", env=env) as stack:
        if store_name == "folder":
            folder = stack.tmp / "artifacts"
            stack.env["TRAINYARD_ARTIFACT_URL"] = f"file://{folder}"
        elif store_name == "s3":
            s3 = S3Server(stack.tmp / "moto.log")
            stack.env.update(s3.env())
            os.environ.update(S3_CREDENTIALS)  # for the bench's own store (seed_checkpoint)
        else:
            stack.env["TRAINYARD_ARTIFACT_URL"] = "db"
        try:
            return _run_rounds(stack, store_name, args, files, mb, folder, s3)
        finally:
            if s3 is not None:
                s3.stop()


def _run_rounds(stack: Stack, store_name: str, args: argparse.Namespace, files: dict[str, Path], mb: float,
                folder: Path | None, s3: S3Server | None) -> dict[str, dict[str, float]]:
    stack.start_api()
    headers = stack.auth_headers("bench")
    job_id, key, sha = seed_checkpoint(stack, headers, files["checkpoint"])
    url = f"{stack.base_url}/v1/jobs/{job_id}/checkpoints/best"
    up_sha = sha256_file(files["dataset"])
    down, up, up_form = [], [], []
    for r in range(args.rounds):
        with PeakRss(stack) as peak:
            http_s, got, size = http_download(url, headers)
        assert got == sha and size == files["checkpoint"].stat().st_size, "download corrupted"
        if s3 is not None:
            bare_s, got, _ = bare_s3_read(s3, key)
        elif folder is not None:
            bare_s, got, _ = bare_file_read(folder / key)
        else:
            bare_s, got, _ = bare_db_read(stack.pg_dsn(), key)
        assert got == sha
        down.append({"http_mb_s": mb / http_s, "bare_mb_s": mb / bare_s, "rss_mb": peak.growth_mb})
        print(f"{store_name:6} download round {r + 1}: http {mb / http_s:6.0f} MB/s  bare {mb / bare_s:6.0f} MB/s  "
              f"ratio {bare_s / http_s:5.2f}  API peak RSS +{peak.growth_mb:.1f} MB", flush=True)

        up_mb = files["dataset"].stat().st_size / 1e6
        for form, rows, label in ((False, up, "upload"), (True, up_form, "form up")):
            os.sync()
            with PeakRss(stack) as peak:
                http_s, body = http_upload(stack.base_url, headers, files["dataset"], form=form)
            assert body["sha256"] == up_sha, "upload corrupted"
            os.sync()
            if s3 is not None:
                bare_s, got = bare_s3_write(s3, files["dataset"])
            elif folder is not None:
                bare_s, got = bare_file_write(files["dataset"], folder / "bare-upload")
            else:
                bare_s, got = bare_db_insert(stack.pg_dsn(), files["dataset"], 4 * BLOCK)
            assert got == up_sha
            requests.delete(f"{stack.base_url}/v1/datasets/{body['id']}", headers=headers, timeout=60)
            rows.append({"http_mb_s": up_mb / http_s, "bare_mb_s": up_mb / bare_s, "rss_mb": peak.growth_mb})
            print(f"{store_name:6} {label:8} round {r + 1}: http {up_mb / http_s:6.0f} MB/s  bare "
                  f"{up_mb / bare_s:6.0f} MB/s  ratio {bare_s / http_s:5.2f}  API peak RSS +{peak.growth_mb:.1f} MB",
                  flush=True)

    def summary(rows: list[dict[str, float]]) -> dict[str, float]:
        return {"http_mb_s": statistics.median(r["http_mb_s"] for r in rows),
                "bare_mb_s": statistics.median(r["bare_mb_s"] for r in rows),
                "ratio": statistics.median(r["http_mb_s"] / r["bare_mb_s"] for r in rows),
                "rss_mb": max(r["rss_mb"] for r in rows)}

    return {"download": summary(down), "upload": summary(up), "form upload": summary(up_form)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=200, help="size of the checkpoint and the data set")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--stores", default="db,folder,s3", help="of db, folder, s3")
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
        **{f"{store}_{direction.replace(' ', '_')}": {k: round(v, 2) for k, v in r.items()}
           for store, res in results.items() for direction, r in res.items()},
        "ratio_ok": all(r["ratio"] >= TARGET_RATIO for res in results.values() for r in res.values()),
        "rss_ok": all(r["rss_mb"] < TARGET_RSS_MB for res in results.values() for r in res.values()),
    }))


if __name__ == "__main__":
    main()
