"""Both artifact-store backends, against the real Postgres database."""
from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

import pytest

from trainyard.db import Database
from trainyard.store import ArtifactMissing, ArtifactTooLarge, DatabaseStore, FsspecStore, download_to


@pytest.fixture(params=["db", "folder"])
def store(request: pytest.FixtureRequest, settings: Any, tmp_path: Path) -> Any:
    db = Database(settings.database_url)
    if request.param == "db":
        # A small chunk size makes ranges cross chunk boundaries.
        yield DatabaseStore(db, chunk_size=1000)
    else:
        yield FsspecStore(db, f"file://{tmp_path}/artifacts")
    db.dispose()


def test_put_stat_ranges_and_delete(store: Any, tmp_path: Path) -> None:
    data = os.urandom(4321)
    meta = store.put("tests/blob-1", io.BytesIO(data))
    assert meta.size == len(data) and meta.sha256 == hashlib.sha256(data).hexdigest()
    assert store.stat("tests/blob-1") == meta
    assert b"".join(store.iter_bytes("tests/blob-1")) == data
    for start, end in ((0, 1), (999, 1001), (1500, 4321), (4000, 10_000), (3000, 3000)):
        assert b"".join(store.iter_bytes("tests/blob-1", start, end)) == data[start:end]
    out = tmp_path / "copy"
    download_to(store, "tests/blob-1", out)
    assert out.read_bytes() == data
    store.delete("tests/blob-1")
    assert store.stat("tests/blob-1") is None
    with pytest.raises(ArtifactMissing):
        list(store.iter_bytes("tests/blob-1"))


def test_overwrite_replaces_and_size_cap_leaves_nothing(store: Any) -> None:
    store.put("tests/blob-2", io.BytesIO(b"a" * 3000))
    store.put("tests/blob-2", io.BytesIO(b"b" * 10))
    assert b"".join(store.iter_bytes("tests/blob-2")) == b"b" * 10
    with pytest.raises(ArtifactTooLarge):
        store.put("tests/blob-3", io.BytesIO(b"c" * 5000), max_bytes=2000)
    assert store.stat("tests/blob-3") is None


def test_database_store_streams_chunk_by_chunk(settings: Any) -> None:
    db = Database(settings.database_url)
    store = DatabaseStore(db, chunk_size=1024)
    store.put("tests/blob-4", io.BytesIO(os.urandom(10 * 1024)))
    chunks = list(store.iter_bytes("tests/blob-4"))
    assert [len(c) for c in chunks] == [1024] * 10
    store.delete("tests/blob-4")
    db.dispose()


def test_database_store_deletes_record_and_chunks_in_one_commit(settings: Any) -> None:
    # A worker deletes two artifacts after every job it finishes (trainyard/retention.py) before it takes
    # the next one: each is one transaction (one fsync), and the record never outlives its chunks.
    from sqlalchemy import event, func, select

    from trainyard.db.models import ArtifactChunk

    db = Database(settings.database_url)
    store = DatabaseStore(db, chunk_size=1024)
    store.put("tests/blob-5", io.BytesIO(os.urandom(3 * 1024)))
    commits: list[object] = []

    def committed(conn: object) -> None:
        commits.append(conn)

    event.listen(db.engine, "commit", committed)
    try:
        store.delete("tests/blob-5")
    finally:
        event.remove(db.engine, "commit", committed)
    assert len(commits) == 1
    assert store.stat("tests/blob-5") is None
    with db.session() as s:
        assert s.execute(select(func.count()).select_from(ArtifactChunk)
                         .where(ArtifactChunk.key == "tests/blob-5")).scalar_one() == 0
    db.dispose()
