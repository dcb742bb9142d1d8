"""The folder backend: an artifact's bytes on any fsspec filesystem, in practice a local folder
(`TRAINYARD_ARTIFACT_URL=file:///srv/artifacts`), its record in the database.

S3 URLs never come here: routing.make_store sends them to the S3 store (s3.py). A folder on this
machine lets downloads use sendfile (`local_file`) and finished files be hard-linked in (`adopt`).
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from typing import Any, BinaryIO

from sqlalchemy import delete

from trainyard.db import Database
from trainyard.db.models import Artifact
from trainyard.store.base import (CHUNK_SIZE, READ_SIZE, ArtifactMissing, ArtifactTooLarge, RecordedObjects,
                                  StoredArtifact, checked_key)


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
