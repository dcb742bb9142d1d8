"""The object store on a real S3-compatible server (moto, on loopback), and the size
threshold that keeps small artifacts in Postgres."""
from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from trainyard.db import Database
from trainyard.db.models import Artifact
from trainyard.store import ArtifactMissing, download_to, make_store
from tests.s3server import S3_CREDENTIALS, S3Server


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server(tmp_path_factory.mktemp("s3") / "moto.log")
    saved = {k: os.environ.get(k) for k in S3_CREDENTIALS}
    os.environ.update(S3_CREDENTIALS)  # botocore in this process reads them, as a worker's would
    yield server
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.stop()


def _location(db: Database, key: str) -> str | None:
    with db.session() as s:
        return s.execute(select(Artifact.location).where(Artifact.key == key)).scalar_one_or_none()


def test_threshold_routes_small_to_postgres_and_large_to_s3(s3: S3Server, settings: Any, tmp_path: Path) -> None:
    db = Database(settings.database_url)
    store = make_store(db, "s3://routing-test/prefix", db_max_bytes=4096, s3_endpoint_url=s3.url)
    fs = s3.objects()
    small, large = os.urandom(4096), os.urandom(3 * 1024 * 1024 + 17)
    assert store.put("t/small", io.BytesIO(small)).size == 4096
    meta = store.put("t/large", io.BytesIO(large))
    assert meta.sha256 == hashlib.sha256(large).hexdigest()
    assert _location(db, "t/small") == "db" and _location(db, "t/large") == "object"
    assert not fs.exists("routing-test/prefix/t/small")
    assert fs.info("routing-test/prefix/t/large")["size"] == len(large)  # really on the S3 server
    # Reads (whole, ranged, streamed in bounded pieces) go where each row says.
    assert b"".join(store.iter_bytes("t/small", 100, 200)) == small[100:200]
    pieces = list(store.iter_bytes("t/large"))
    assert b"".join(pieces) == large and max(len(p) for p in pieces) <= 1024 * 1024
    for start, end in ((0, 1), (1024 * 1024 - 3, 1024 * 1024 + 5), (len(large) - 10, len(large) + 99)):
        assert b"".join(store.iter_bytes("t/large", start, end)) == large[start:end]
    download_to(store, "t/large", tmp_path / "copy")
    assert (tmp_path / "copy").read_bytes() == large
    # Replaced by a small one: the bytes move to Postgres and the S3 object goes.
    store.put("t/large", io.BytesIO(b"tiny"))
    assert _location(db, "t/large") == "db" and not fs.exists("routing-test/prefix/t/large")
    assert b"".join(store.iter_bytes("t/large")) == b"tiny"
    # A store configured without the object store now says why it cannot read an S3 artifact.
    store.put("t/again-large", io.BytesIO(large))
    db_only = make_store(db, "db")
    with pytest.raises(ArtifactMissing, match="object store"):
        list(db_only.iter_bytes("t/again-large"))
    for key in ("t/small", "t/large", "t/again-large"):
        store.delete(key)
        assert store.stat(key) is None
    assert not fs.exists("routing-test/prefix/t/again-large")
    db.dispose()


def test_without_threshold_everything_goes_to_s3(s3: S3Server, settings: Any) -> None:
    db = Database(settings.database_url)
    store = make_store(db, "s3://all-in-s3", s3_endpoint_url=s3.url)
    store.put("t/one-byte", io.BytesIO(b"x"))
    assert _location(db, "t/one-byte") == "object" and s3.objects().cat("all-in-s3/t/one-byte") == b"x"
    store.delete("t/one-byte")
    db.dispose()
