"""The artifact store: checkpoints and uploaded data sets.

Two backends behind one small interface, chosen by `TRAINYARD_ARTIFACT_URL`:
- `db` (default): the bytes live in the database as fixed-size chunk rows, so a worker on any machine
  needs nothing but the database. Reads stream chunk by chunk: memory stays constant whatever the size.
- any fsspec URL (`file:///srv/artifacts`, `s3://bucket/prefix`, ...): the bytes live there. S3 and
  S3-compatible servers (MinIO, Ceph) go through s3fs; `TRAINYARD_S3_ENDPOINT_URL` names a server other
  than AWS, and credentials come from the usual `AWS_*` variables.

With an object store, `TRAINYARD_ARTIFACT_DB_MAX_BYTES` keeps small artifacts in the database and sends
only larger ones to the object store (`RoutingStore`). Either way, each artifact's row in `artifacts`
(size, sha256, and `location`: `db` or `object`) says where its bytes are, so reads find them whatever
the settings are now, and a download is answered (ETag, Content-Length, Range) without touching the
bytes. Keys are built by the server from ids, never from client input.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from sqlalchemy import delete, select

from trainyard.db import Database
from trainyard.db.models import Artifact, ArtifactChunk
from trainyard.settings import Settings

if TYPE_CHECKING:
    from trainyard.store.s3 import S3Store

logger = logging.getLogger(__name__)

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
                s.add(Artifact(key=key, size_bytes=size, sha256=meta.sha256, chunk_size=self.chunk_size,
                               location=IN_DB))
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


class FsspecStore(RecordedObjects):
    """Bytes on any fsspec filesystem; the record (size, sha256) in the database."""

    def __init__(self, db: Database, url: str, storage_options: dict[str, Any] | None = None) -> None:
        import fsspec

        self.db = db
        self.fs, root = fsspec.core.url_to_fs(url, **(storage_options or {}))
        self.root = root.rstrip("/")
        # On S3 this creates the bucket when it is missing (and is a no-op for a prefix inside it).
        self.fs.makedirs(self.root, exist_ok=True)

    def _path(self, key: str) -> str:
        return f"{self.root}/{checked_key(key)}"

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
        return self._record(key, size, digest.hexdigest())

    def iter_bytes(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        start, end = self._span(key, start, end)
        if start >= end:
            return
        # A bounded read-ahead: on S3 each block is one ranged GET, so memory stays at one block.
        try:
            fh = self.fs.open(self._path(key), "rb", block_size=CHUNK_SIZE)
        except FileNotFoundError as exc:  # recorded, but lost from the disk: missing, as the S3 store says
            raise ArtifactMissing(f"{key}: recorded, but not in the object store") from exc
        with fh:
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
        return self._record(key, size, sha256)

    def local_file(self, key: str) -> str | None:
        """The artifact's path when the store is a folder on this machine (downloads use sendfile)."""
        protocol = self.fs.protocol
        if "file" in (protocol if isinstance(protocol, (tuple, list)) else (protocol,)):
            return self._path(key)
        return None


class RoutingStore:
    """Small artifacts in the database, larger ones in the object store; reads go where the row says.

    `put` reads up to `db_max_bytes + 1` bytes first: a stream that ends within the threshold is stored
    as database chunks; a longer one goes to the object store, the bytes already read first. Memory stays
    at the threshold (keep it to a few MiB) and nothing is read twice.
    """

    def __init__(self, database: DatabaseStore, objects: FsspecStore | S3Store | None, db_max_bytes: int | None) -> None:
        self.db = database.db
        self.database = database
        self.objects = objects
        self.db_max_bytes = db_max_bytes

    def _location(self, key: str) -> str | None:
        with self.db.session() as s:
            return s.execute(select(Artifact.location).where(Artifact.key == key)).scalar_one_or_none()

    def _backend(self, location: str) -> DatabaseStore | FsspecStore | S3Store:
        if location == IN_DB:
            return self.database
        if self.objects is None:
            raise ArtifactMissing("the artifact is in the object store, but TRAINYARD_ARTIFACT_URL names none")
        return self.objects

    def put(self, key: str, stream: BinaryIO, *, max_bytes: int | None = None) -> StoredArtifact:
        if self.objects is None:
            target: DatabaseStore | FsspecStore | S3Store = self.database
        elif self.db_max_bytes is None:
            target = self.objects
        else:
            head = _read_limited(stream, self.db_max_bytes + 1)
            target = self.database if len(head) <= self.db_max_bytes else self.objects
            stream = _Prepended(head, stream)
        previous = self._location(key)
        if previous is not None and self._backend_or_none(previous) is not target:
            # Replaced across backends (the threshold or the URL changed): drop the old bytes.
            self.delete(key)
        return target.put(key, stream, max_bytes=max_bytes)

    def _backend_or_none(self, location: str) -> DatabaseStore | FsspecStore | S3Store | None:
        try:
            return self._backend(location)
        except ArtifactMissing:
            return None

    def stat(self, key: str) -> StoredArtifact | None:
        return self.database.stat(key)

    def iter_bytes(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        location = self._location(key)
        if location is None:
            raise ArtifactMissing(key)
        yield from self._backend(location).iter_bytes(key, start, end)

    def local_file(self, key: str) -> str | None:
        location = self._location(key)
        backend = self._backend_or_none(location) if location is not None else None
        return backend.local_file(key) if backend is not None else None

    def adopt(self, key: str, path: str, size: int, sha256: str) -> StoredArtifact | None:
        # Only a file the object store would get anyway (past the threshold) is handed over whole.
        if self.objects is None or (self.db_max_bytes is not None and size <= self.db_max_bytes):
            return None
        previous = self._location(key)
        if previous is not None and self._backend_or_none(previous) is not self.objects:
            self.delete(key)
        return self.objects.adopt(key, path, size, sha256)

    def delete(self, key: str) -> None:
        location = self._location(key)
        backend = self._backend_or_none(location) if location is not None else None
        if backend is not None:
            backend.delete(key)
        elif location is not None:
            logger.warning("artifact %s is in an object store this process is not configured for; "
                           "its record stays so the bytes can still be found", key)


class _Prepended(io.RawIOBase):
    """`head` followed by the rest of `stream`: what `RoutingStore.put` already read is not lost."""

    def __init__(self, head: bytes, stream: BinaryIO) -> None:
        self._head = memoryview(head)
        self._stream = stream

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self._head:
            n = len(self._head) if size is None or size < 0 else min(size, len(self._head))
            part, self._head = bytes(self._head[:n]), self._head[n:]
            return part
        return self._stream.read(size)


def storage_options(artifact_url: str, s3_endpoint_url: str | None) -> dict[str, Any]:
    """fsspec options for the artifact URL: an S3-compatible server's endpoint (credentials: AWS_*)."""
    if s3_endpoint_url and artifact_url.startswith(("s3://", "s3a://")):
        return {"endpoint_url": s3_endpoint_url}
    return {}


def make_store(db: Database, artifact_url: str, *, db_max_bytes: int | None = None,
               s3_endpoint_url: str | None = None) -> ArtifactStore:
    database = DatabaseStore(db)
    if artifact_url == "db":
        # Still a RoutingStore: artifacts written earlier under an object-store URL are then reported
        # missing with a reason instead of being read from the wrong place.
        return RoutingStore(database, None, None)
    objects: FsspecStore | S3Store
    if artifact_url.startswith(("s3://", "s3a://")):
        from trainyard.store.s3 import S3Store

        # botocore's own (blocking, gevent-friendly) client rather than s3fs: s3fs runs an asyncio
        # loop in a helper thread, which under the API's gevent workers is a greenlet and cannot work.
        objects = S3Store(db, artifact_url, endpoint_url=s3_endpoint_url)
    else:
        objects = FsspecStore(db, artifact_url, storage_options(artifact_url, s3_endpoint_url))
    return RoutingStore(database, objects, db_max_bytes)


def store_from_settings(db: Database, settings: Settings) -> ArtifactStore:
    return make_store(db, settings.artifact_url, db_max_bytes=settings.artifact_db_max_bytes,
                      s3_endpoint_url=settings.s3_endpoint_url)


# Keys are built here from server-issued ids (trainyard.db.models.new_id) and numbers only; nothing a client
# sends (a file name, a path) can become part of one, and a malformed id is a bug, refused loudly.
_SERVER_ID = re.compile(r"[a-z]{2,4}_[0-9a-f]{32}")


def _server_id(value: str) -> str:
    if not isinstance(value, str) or not _SERVER_ID.fullmatch(value):
        raise ValueError(f"artifact keys are built from server-issued ids only, not {value!r}")
    return value


def _attempt_part(attempt: int | None) -> str:
    # A training attempt writes under keys of its own: a worker that lost its lease and has not noticed
    # yet can then neither overwrite nor delete what the attempt that replaced it stored for the same epoch.
    return "" if attempt is None else f".a{int(attempt)}"


def checkpoint_key(job_id: str, epoch: int, attempt: int | None = None) -> str:
    return f"jobs/{_server_id(job_id)}/checkpoints/epoch-{int(epoch):04d}{_attempt_part(attempt)}.keras"


def backup_key(job_id: str, epoch: int, attempt: int | None = None) -> str:
    # One key per epoch: the job row points at the previous backup until the new one is complete.
    return f"jobs/{_server_id(job_id)}/backups/epoch-{int(epoch):04d}{_attempt_part(attempt)}.weights.h5"


def export_key(job_id: str, fmt: str, epoch: int, attempt: int | None = None) -> str:
    # Named after the checkpoint it was made from: a later, better checkpoint never matches an old export.
    return f"jobs/{_server_id(job_id)}/exports/epoch-{int(epoch):04d}{_attempt_part(attempt)}.{fmt}.tar.gz"


def dataset_key(dataset_id: str) -> str:
    return f"datasets/{_server_id(dataset_id)}"


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
    "export_key",
    "holds",
    "make_store",
    "put_file",
    "RoutingStore",
    "store_from_settings",
]
