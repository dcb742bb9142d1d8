"""How fast uploads are checked, and what it costs in memory: `inspect_npz` / `inspect_csv` on realistic
files and on the worst ones we know (`tests/worst_uploads.py`), each in a fresh process.

Per file: MB/s of upload bytes and of data (uncompressed) checked, wall and CPU time, and peak RSS growth
(VmHWM reset after imports); the baseline is a bare pass over the same bytes in the same process (every
`.npz` member inflated through zipfile in 1 MiB reads; the CSV read in 1 MiB blocks and its lines
counted). Run: `.venv/bin/python bench/upload_checks.py [--scale 200] [--only NAME]`.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.worst_uploads import WORST  # noqa: E402


def realistic(folder: Path, scale: int) -> dict[str, tuple[Path, str | None]]:
    """Random float features and integer labels, as users upload them."""
    rng = np.random.default_rng(0)
    n = scale * 1_000_000 // (4 * 32)
    x = rng.normal(size=(n, 32)).astype(np.float32)
    y = rng.integers(0, 10, size=n)
    files: dict[str, tuple[Path, str | None]] = {}
    for name, save in (("random.npz", np.savez), ("random_compressed.npz", np.savez_compressed)):
        save(folder / name, x_train=x, y_train=y)
        files[name] = (folder / name, None)
    rows = scale * 1_000_000 // 200
    path = folder / "random.csv"
    with path.open("w") as fh:
        fh.write(",".join(f"f{i}" for i in range(20)) + ",label\n")
        for start in range(0, rows, 10_000):
            block = rng.normal(size=(min(10_000, rows - start), 20))
            fh.write("\n".join(",".join(f"{v:.6f}" for v in r) + f",{i % 3}" for i, r in enumerate(block)) + "\n")
    files["random.csv"] = (path, "label")
    return files


def measure(path: str, target: str | None) -> dict[str, float | str]:
    """Runs in a fresh process: the bare pass, then the check, with the check's peak RSS."""
    from trainyard.datasets import DatasetError, inspect_csv, inspect_npz

    def kib(key: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        return 0

    started = time.perf_counter()
    data_bytes = 0
    if path.endswith(".npz"):
        try:
            with zipfile.ZipFile(path) as zf:
                for info in zf.infolist()[:6]:
                    with zf.open(info) as fp:
                        while chunk := fp.read(1 << 20):
                            data_bytes += len(chunk)
        except (zipfile.BadZipFile, NotImplementedError, OSError):
            pass
    else:
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                data_bytes += len(chunk)
                chunk.count(b"\n")
    bare = time.perf_counter() - started

    base = kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    started, cpu = time.perf_counter(), time.process_time()
    try:
        if path.endswith(".npz"):
            inspect_npz(path, max_decompressed_bytes=2 * 1024**3)
        else:
            inspect_csv(path, target=target or "", max_bytes=512 * 1024**2)
        outcome = "accepted"
    except DatasetError as err:
        outcome = "refused: " + err.errors[0]["field"]
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    size = os.path.getsize(path)
    return {"file": Path(path).name, "outcome": outcome, "upload_mb": size / 1e6, "data_mb": data_bytes / 1e6,
            "wall_s": wall, "cpu_s": cpu, "upload_mb_s": size / 1e6 / wall, "data_mb_s": data_bytes / 1e6 / wall,
            "vs_bare": bare / wall if wall else 0.0, "rss_growth_mb": (kib("VmHWM") - base) / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scale", type=int, default=200, help="MB of data per file (default 200)")
    parser.add_argument("--only", help="only files whose name contains this")
    parser.add_argument("--measure", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure[0], args.measure[1] or None)))
        return
    with tempfile.TemporaryDirectory(prefix="upload-checks-") as tmp:
        folder = Path(tmp)
        files = realistic(folder, args.scale)
        for name, (target, make) in WORST.items():
            path = folder / name
            make(path, args.scale if name != "many_members.npz" else 20)
            files[name] = (path, target)
        rows = []
        print(f"{'file':22s} {'upload MB':>9s} {'data MB':>8s} {'wall s':>7s} {'cpu s':>6s} {'upload MB/s':>11s} "
              f"{'data MB/s':>9s} {'vs bare':>7s} {'RSS +MB':>7s}  outcome")
        for name, (path, target) in files.items():
            if args.only and args.only not in name:
                continue
            out = subprocess.run([sys.executable, __file__, "--measure", str(path), target or ""],
                                 capture_output=True, text=True, check=True, cwd=ROOT)
            row = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"{row['file']:22s} {row['upload_mb']:9.1f} {row['data_mb']:8.1f} {row['wall_s']:7.2f} "
                  f"{row['cpu_s']:6.2f} {row['upload_mb_s']:11.1f} {row['data_mb_s']:9.1f} {row['vs_bare']:7.2f} "
                  f"{row['rss_growth_mb']:7.1f}  {row['outcome']}")
        print(json.dumps({"upload_checks": rows}))


if __name__ == "__main__":
    main()
