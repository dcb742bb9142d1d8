"""The database backend: an artifact's bytes as fixed-size chunk rows in `artifact_chunks`.

A worker on any machine then needs nothing but the database. Reads stream chunk by chunk: memory stays
at one chunk whatever the artifact's size.
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import BinaryIO

from sqlalchemy import delete, select

from trainyard.db import Database
from trainyard.db.models import Artifact, ArtifactChunk
from trainyard.store.base import CHUNK_SIZE, IN_DB, ArtifactMissing, ArtifactTooLarge, StoredArtifact, read_limited


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
                data = read_limited(stream, self.chunk_size)
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
        # The record and its chunks in one transaction: one commit (and fsync) per artifact. A worker deletes
        # two after every job it finishes (trainyard/retention.py) before it takes the next one.
        with self.db.session() as s:
            s.execute(delete(Artifact).where(Artifact.key == key))
            s.execute(delete(ArtifactChunk).where(ArtifactChunk.key == key))

    def local_file(self, key: str) -> str | None:
        """The bytes are rows, never a file on this machine."""
        return None

    def adopt(self, key: str, path: str, size: int, sha256: str) -> StoredArtifact | None:
        """Rows cannot take over a file: the caller `put`s it."""
        return None

    def _delete_chunks(self, key: str) -> None:
        with self.db.session() as s:
            s.execute(delete(ArtifactChunk).where(ArtifactChunk.key == key))
