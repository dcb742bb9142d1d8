"""The artifact store: checkpoints and uploaded data sets.

Two backends behind one small interface, chosen by `TRAINYARD_ARTIFACT_URL`:
- `db` (default): the bytes live in the database as fixed-size chunk rows, so a worker on any machine
  needs nothing but the database. Reads stream chunk by chunk: memory stays constant whatever the size.
- any fsspec URL (`file:///srv/artifacts`, `s3://bucket/prefix`, ...): the bytes live there.

Both keep a row in `artifacts` (size, sha256), so a download can be answered (ETag, Content-Length,
Range) without touching the bytes. Keys are built by the server from ids, never from client input.
"""
from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from sqlalchemy import delete, select

from service.db import Database
from service.db.models import Artifact, ArtifactChunk

logger = logging.getLogger(__name__)

CHUNK_SIZE = 4 * 1024 * 1024
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


def _read_limited(stream: BinaryIO, size: int) -> bytes:
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


class DatabaseStore:
    def __init__(self, db: Database, chunk_size: int = CHUNK_SIZE) -> None:
        self.db = db
        self.chunk_size = chunk_size

    def put(self, key: str, stream: BinaryIO, *, max_bytes: int | None = None) -> StoredArtifact:
        digest = hashlib.sha256()
        size = 0
        seq = 0
        # Replacing an artifact (a retried delivery) must not leave chunks of the old one behind.
        self.delete(key)
        try:
            while True:
                data = _read_limited(stream, self.chunk_size)
                if not data:
                    break
                size += len(data)
                if max_bytes is not None and size > max_bytes:
                    raise ArtifactTooLarge(max_bytes)
                digest.update(data)
                # One short transaction per chunk: memory stays at one chunk, and no long transaction
                # holds locks while a slow client uploads.
                with self.db.session() as s:
                    s.add(ArtifactChunk(key=key, seq=seq, data=data))
                seq += 1
            meta = StoredArtifact(key=key, size=size, sha256=digest.hexdigest())
            with self.db.session() as s:
                s.add(Artifact(key=key, size_bytes=size, sha256=meta.sha256, chunk_size=self.chunk_size))
            return meta
        except BaseException:
            self._delete_chunks(key)
            raise

    def stat(self, key: str) -> StoredArtifact | None:
        with self.db.session() as s:
            row = s.get(Artifact, key)
            return None if row is None else StoredArtifact(key, row.size_bytes, row.sha256)

    def iter_bytes(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Yield bytes [start, end) one chunk row at a time."""
        with self.db.session() as s:
            row = s.get(Artifact, key)
            if row is None:
                raise ArtifactMissing(key)
            size, chunk_size = row.size_bytes, row.chunk_size
        end = size if end is None else min(end, size)
        if start >= end:
            return
        for seq in range(start // chunk_size, (end - 1) // chunk_size + 1):
            with self.db.session() as s:
                data = s.execute(
                    select(ArtifactChunk.data).where(ArtifactChunk.key == key, ArtifactChunk.seq == seq)
                ).scalar_one_or_none()
            if data is None:
                raise ArtifactMissing(f"{key}: chunk {seq} is missing")
            data = bytes(data)
            lo = max(start - seq * chunk_size, 0)
            hi = min(end - seq * chunk_size, len(data))
            yield data[lo:hi]

    def delete(self, key: str) -> None:
        with self.db.session() as s:
            s.execute(delete(Artifact).where(Artifact.key == key))
        self._delete_chunks(key)

    def local_file(self, key: str) -> str | None:
        """The bytes are rows, never a file on this machine."""
        return None

    def adopt(self, key: str, path: str, size: int, sha256: str) -> StoredArtifact | None:
        """Rows cannot take over a file: the caller `put`s it."""
        return None

    def _delete_chunks(self, key: str) -> None:
        with self.db.session() as s:
            s.execute(delete(ArtifactChunk).where(ArtifactChunk.key == key))


class FsspecStore:
    """Bytes on any fsspec filesystem; the record (size, sha256) in the database."""

    def __init__(self, db: Database, url: str) -> None:
        import fsspec

        self.db = db
        self.fs, root = fsspec.core.url_to_fs(url)
        self.root = root.rstrip("/")
        self.fs.makedirs(self.root, exist_ok=True)

    def _path(self, key: str) -> str:
        return f"{self.root}/{key}"

    def put(self, key: str, stream: BinaryIO, *, max_bytes: int | None = None) -> StoredArtifact:
        digest = hashlib.sha256()
        size = 0
        path = self._path(key)
        tmp = f"{path}.part"
        parent = path.rsplit("/", 1)[0]
        self.fs.makedirs(parent, exist_ok=True)
        try:
            with self.fs.open(tmp, "wb") as out:
                while data := stream.read(READ_SIZE):
                    size += len(data)
                    if max_bytes is not None and size > max_bytes:
                        raise ArtifactTooLarge(max_bytes)
                    digest.update(data)
                    out.write(data)
            self.fs.mv(tmp, path)
        except BaseException:
            if self.fs.exists(tmp):
                self.fs.rm(tmp)
            raise
        meta = StoredArtifact(key=key, size=size, sha256=digest.hexdigest())
        with self.db.session() as s:
            s.merge(Artifact(key=key, size_bytes=size, sha256=meta.sha256, chunk_size=0))
        return meta

    def stat(self, key: str) -> StoredArtifact | None:
        with self.db.session() as s:
            row = s.get(Artifact, key)
            return None if row is None else StoredArtifact(key, row.size_bytes, row.sha256)

    def iter_bytes(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        meta = self.stat(key)
        if meta is None:
            raise ArtifactMissing(key)
        end = meta.size if end is None else min(end, meta.size)
        if start >= end:
            return
        with self.fs.open(self._path(key), "rb") as fh:
            fh.seek(start)
            remaining = end - start
            while remaining > 0:
                data = fh.read(min(READ_SIZE, remaining))
                if not data:
                    raise ArtifactMissing(f"{key}: file is shorter than recorded")
                remaining -= len(data)
                yield data

    def delete(self, key: str) -> None:
        with self.db.session() as s:
            s.execute(delete(Artifact).where(Artifact.key == key))
        path = self._path(key)
        if self.fs.exists(path):
            self.fs.rm(path)

    def adopt(self, key: str, path: str, size: int, sha256: str) -> StoredArtifact | None:
        """Store the local file at `path`, whose size and sha256 the caller computed as it wrote it, by
        hard-linking it into a folder store on the same filesystem: no copy. None when that cannot be
        done (another filesystem, a remote store); the caller then `put`s the file."""
        dest = self.local_file(key)
        if dest is None:
            return None
        tmp = f"{dest}.part"
        try:
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            if os.path.exists(tmp):
                os.unlink(tmp)
            os.link(path, tmp)
            os.replace(tmp, dest)
        except OSError:
            if os.path.exists(tmp):
                os.unlink(tmp)
            return None
        with self.db.session() as s:
            s.merge(Artifact(key=key, size_bytes=size, sha256=sha256, chunk_size=0))
        return StoredArtifact(key=key, size=size, sha256=sha256)

    def local_file(self, key: str) -> str | None:
        """The artifact's path when the store is a folder on this machine (downloads use sendfile)."""
        protocol = self.fs.protocol
        if "file" in (protocol if isinstance(protocol, (tuple, list)) else (protocol,)):
            return self._path(key)
        return None


def make_store(db: Database, artifact_url: str) -> ArtifactStore:
    if artifact_url == "db":
        return DatabaseStore(db)
    return FsspecStore(db, artifact_url)


def checkpoint_key(job_id: str, epoch: int) -> str:
    return f"jobs/{job_id}/checkpoints/epoch-{epoch:04d}.keras"


def backup_key(job_id: str, epoch: int) -> str:
    # One key per epoch: the job row points at the previous backup until the new one is complete.
    return f"jobs/{job_id}/backups/epoch-{epoch:04d}.weights.h5"


def dataset_key(dataset_id: str) -> str:
    return f"datasets/{dataset_id}"


__all__ = [
    "ArtifactMissing",
    "ArtifactStore",
    "ArtifactTooLarge",
    "backup_key",
    "DatabaseStore",
    "FsspecStore",
    "StoredArtifact",
    "checkpoint_key",
    "dataset_key",
    "download_to",
    "make_store",
    "put_file",
]
