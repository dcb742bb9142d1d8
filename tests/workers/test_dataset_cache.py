"""The worker's data set cache: fetched once, verified, shared safely, bounded in bytes."""
from __future__ import annotations

import io
import os
import time
from pathlib import Path
from typing import Any

import pytest

from trainyard.db import Database
from trainyard.store import ArtifactMissing, FsspecStore
from workers.dataset_cache import DatasetCache


@pytest.fixture()
def store(settings: Any, tmp_path: Path) -> Any:
    db = Database(settings.database_url)
    yield FsspecStore(db, f"file://{tmp_path}/artifacts")
    db.dispose()


def _put(store: Any, key: str, data: bytes) -> Any:
    return store.put(key, io.BytesIO(data))


def test_second_fetch_reads_the_local_copy_not_the_store(store: Any, tmp_path: Path) -> None:
    data = os.urandom(5000)
    meta = _put(store, "datasets/a", data)
    cache = DatasetCache(tmp_path / "cache", max_bytes=1 << 20)
    first = cache.fetch(store, "datasets/a", meta.sha256, meta.size, ".npz", fallback=tmp_path / "job1.npz")
    assert first.parent == tmp_path / "cache" and first.read_bytes() == data
    store.delete("datasets/a")  # gone from the store: only the cache can answer now
    second = cache.fetch(store, "datasets/a", meta.sha256, meta.size, ".npz", fallback=tmp_path / "job2.npz")
    assert second == first and second.read_bytes() == data
    assert not (tmp_path / "job1.npz").exists() and not (tmp_path / "job2.npz").exists()


def test_a_truncated_cached_file_is_fetched_again(store: Any, tmp_path: Path) -> None:
    data = os.urandom(3000)
    meta = _put(store, "datasets/b", data)
    cache = DatasetCache(tmp_path / "cache", max_bytes=1 << 20)
    path = cache.fetch(store, "datasets/b", meta.sha256, meta.size, ".csv", fallback=tmp_path / "x.csv")
    path.write_bytes(data[:100])
    assert cache.fetch(store, "datasets/b", meta.sha256, meta.size, ".csv", fallback=tmp_path / "x.csv").read_bytes() == data


def test_bytes_that_do_not_match_their_sha256_never_enter_the_cache(store: Any, tmp_path: Path) -> None:
    meta = _put(store, "datasets/c", b"real bytes")
    cache = DatasetCache(tmp_path / "cache", max_bytes=1 << 20)
    with pytest.raises(ArtifactMissing):
        # The recorded sha256 is what names the file; a store whose bytes differ from it is refused.
        cache.fetch(store, "datasets/c", "0" * 64, meta.size, ".npz", fallback=tmp_path / "c.npz")
    store.put("datasets/c", io.BytesIO(b"other bytes"))
    with pytest.raises(ArtifactMissing):
        cache.fetch(store, "datasets/c", meta.sha256, meta.size, ".npz", fallback=tmp_path / "c.npz")
    assert list((tmp_path / "cache").iterdir()) == []


def test_least_recently_used_files_go_when_over_budget(store: Any, tmp_path: Path) -> None:
    cache = DatasetCache(tmp_path / "cache", max_bytes=2500)
    metas = {name: _put(store, f"datasets/{name}", os.urandom(1000)) for name in ("d1", "d2", "d3")}
    paths = {}
    for name in ("d1", "d2"):
        paths[name] = cache.fetch(store, f"datasets/{name}", metas[name].sha256, 1000, ".npz", fallback=tmp_path / "f")
        time.sleep(0.02)
    os.utime(paths["d1"])  # d1 used again: d2 is now the least recently used
    time.sleep(0.02)
    paths["d3"] = cache.fetch(store, "datasets/d3", metas["d3"].sha256, 1000, ".npz", fallback=tmp_path / "f")
    assert paths["d1"].exists() and paths["d3"].exists() and not paths["d2"].exists()


def test_disabled_or_too_big_goes_to_the_job_folder(store: Any, tmp_path: Path) -> None:
    meta = _put(store, "datasets/e", os.urandom(2000))
    for cache in (DatasetCache(tmp_path / "off", max_bytes=0), DatasetCache(tmp_path / "small", max_bytes=1000)):
        target = tmp_path / f"job-{cache.max_bytes}.npz"
        assert cache.fetch(store, "datasets/e", meta.sha256, meta.size, ".npz", fallback=target) == target
        assert target.stat().st_size == 2000 and not cache.folder.exists()
