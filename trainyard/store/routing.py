"""Choosing a backend: by `TRAINYARD_ARTIFACT_URL` for new artifacts, by each artifact's recorded
location for existing ones.

`db` (the default) keeps every artifact's bytes in the database. Any other URL names an object store:
`s3://` and `s3a://` go to the S3 store (s3.py; `TRAINYARD_S3_ENDPOINT_URL` names a server other than
AWS, credentials come from the usual `AWS_*` variables), anything else to fsspec (folder.py). With an
object store, `TRAINYARD_ARTIFACT_DB_MAX_BYTES` keeps small artifacts in the database and sends only
larger ones to the object store. Either way each artifact's row in `artifacts` says where its bytes are
(`location`: `db` or `object`), so reads find them whatever the settings are now.
"""
from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from typing import Any, BinaryIO

from sqlalchemy import select

from trainyard.db import Database
from trainyard.db.models import Artifact
from trainyard.settings import Settings
from trainyard.store.base import IN_DB, ArtifactMissing, ArtifactStore, StoredArtifact, read_limited
from trainyard.store.database import DatabaseStore
from trainyard.store.folder import FsspecStore
from trainyard.store.s3 import S3Store

logger = logging.getLogger(__name__)


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
            head = read_limited(stream, self.db_max_bytes + 1)
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
        # botocore's own (blocking, gevent-friendly) client rather than s3fs: s3fs runs an asyncio
        # loop in a helper thread, which under the API's gevent workers is a greenlet and cannot work.
        objects = S3Store(db, artifact_url, endpoint_url=s3_endpoint_url)
    else:
        objects = FsspecStore(db, artifact_url, storage_options(artifact_url, s3_endpoint_url))
    return RoutingStore(database, objects, db_max_bytes)


def store_from_settings(db: Database, settings: Settings) -> ArtifactStore:
    return make_store(db, settings.artifact_url, db_max_bytes=settings.artifact_db_max_bytes,
                      s3_endpoint_url=settings.s3_endpoint_url)
