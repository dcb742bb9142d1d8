"""What every artifact store shares: the interface, its errors and record, and helpers built on it.

An artifact is bytes under a key (trainyard/store/keys.py) with a record in `artifacts` (size, sha256 and
`location`: where the bytes are). The backends are `DatabaseStore` (database.py), `FsspecStore`
(folder.py), `S3Store` (s3.py) and `RoutingStore` (routing.py), which picks one of them per artifact.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from trainyard.db import Database
from trainyard.db.models import Artifact

CHUNK_SIZE = 4 * 1024 * 1024
# Where an artifact's bytes are (`artifacts.location`).
IN_DB = "db"
IN_OBJECT_STORE = "object"
READ_SIZE = 1024 * 1024


class ArtifactTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"artifact exceeds {limit} bytes")
        self.limit = limit


class ArtifactMissing(Exception):
    pass


@dataclass(frozen=True)
class StoredArtifact:
    key: str
    size: int
    sha256: str


class ArtifactStore(Protocol):
    def put(self, key: str, stream: BinaryIO, *, max_bytes: int | None = None) -> StoredArtifact: ...

    def stat(self, key: str) -> StoredArtifact | None: ...

    def iter_bytes(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]: ...

    def delete(self, key: str) -> None: ...

    def local_file(self, key: str) -> str | None: ...

    def adopt(self, key: str, path: str, size: int, sha256: str) -> StoredArtifact | None: ...


def put_file(store: ArtifactStore, key: str, path: str | os.PathLike[str]) -> StoredArtifact:
    with open(path, "rb") as fh:
        return store.put(key, fh)


def download_to(store: ArtifactStore, key: str, path: str | os.PathLike[str]) -> StoredArtifact:
    """Copy an artifact to a local file and check it against its recorded sha256."""
    meta = store.stat(key)
    if meta is None:
        raise ArtifactMissing(key)
    digest = hashlib.sha256()
    tmp = Path(f"{path}.part")
    with open(tmp, "wb") as out:
        for chunk in store.iter_bytes(key):
            digest.update(chunk)
            out.write(chunk)
    if digest.hexdigest() != meta.sha256:
        tmp.unlink(missing_ok=True)
        raise ArtifactMissing(f"{key}: stored bytes do not match their sha256")
    os.replace(tmp, path)
    return meta


def holds(store: ArtifactStore, key: str, sha256: str) -> bool:
    """Whether the store hands back bytes of `key` that hash to `sha256`. The bytes are read back in full:
    the record alone would not see a file lost or damaged after it was stored."""
    digest = hashlib.sha256()
    try:
        for chunk in store.iter_bytes(key):
            digest.update(chunk)
    except ArtifactMissing:
        return False
    return digest.hexdigest() == sha256


def read_limited(stream: BinaryIO, size: int) -> bytes:
    """Read up to `size` bytes, fewer only at end of stream (raw streams may return short reads)."""
    parts: list[bytes] = []
    remaining = size
    while remaining > 0:
        part = stream.read(min(remaining, READ_SIZE))
        if not part:
            break
        parts.append(part)
        remaining -= len(part)
    return b"".join(parts)


def checked_key(key: str) -> str:
    """Second line of defence for object and folder stores: whatever the key, it stays under the root."""
    parts = key.split("/")
    if key.startswith("/") or "\\" in key or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"not an artifact key: {key!r}")
    return key


class RecordedObjects:
    """What stores keeping bytes outside the database share: the record (size, sha256, location) in the
    database, and reading a byte range of it."""

    db: Database

    def _record(self, key: str, size: int, sha256: str) -> StoredArtifact:
        with self.db.session() as s:
            s.merge(Artifact(key=key, size_bytes=size, sha256=sha256, chunk_size=0, location=IN_OBJECT_STORE))
        return StoredArtifact(key=key, size=size, sha256=sha256)

    def stat(self, key: str) -> StoredArtifact | None:
        with self.db.session() as s:
            row = s.get(Artifact, key)
            return None if row is None else StoredArtifact(key, row.size_bytes, row.sha256)

    def _span(self, key: str, start: int, end: int | None) -> tuple[int, int]:
        """[start, end) clipped to the recorded size; ArtifactMissing when there is no record."""
        meta = self.stat(key)
        if meta is None:
            raise ArtifactMissing(key)
        return start, meta.size if end is None else min(end, meta.size)
