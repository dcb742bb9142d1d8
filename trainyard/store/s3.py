"""Artifacts on S3 or an S3-compatible server (MinIO, Ceph, moto), through botocore's blocking client.

Not s3fs: s3fs runs an asyncio loop in a helper thread, and under the API's gevent workers that thread is
a greenlet on the same OS thread, so every call fails ("Calling sync() from within a running loop").
botocore's client blocks on plain sockets, which gevent makes cooperative, and works the same in workers.

Bytes go up as one PUT when they fit in one part, else as a multipart upload of PART_SIZE parts (memory
stays at one part; an object appears only when complete, so readers never see half of one). Downloads are
ranged GETs streamed in READ_SIZE blocks. The record (size, sha256, location) lives in the database, as
for every store.
"""
from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator
from typing import Any, BinaryIO

from sqlalchemy import delete

from trainyard.db import Database
from trainyard.db.models import Artifact
from trainyard.store.base import (READ_SIZE, ArtifactMissing, ArtifactTooLarge, RecordedObjects, StoredArtifact,
                                  checked_key, read_limited)

logger = logging.getLogger(__name__)

# S3's multipart minimum is 5 MiB per part (but the last); 8 MiB parts cover 80 GB in 10,000 parts.
PART_SIZE = 8 * 1024 * 1024


def _client(endpoint_url: str | None) -> Any:
    import botocore.session
    from botocore.config import Config

    session = botocore.session.get_session()
    config = Config(retries={"max_attempts": 5, "mode": "standard"},
                    # Path-style requests: what S3-compatible servers on one host expect.
                    s3={"addressing_style": "path"} if endpoint_url else None,
                    connect_timeout=10, read_timeout=60)
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return session.create_client("s3", endpoint_url=endpoint_url, region_name=region, config=config)


def _missing(exc: Exception) -> bool:
    code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NoSuchBucket", "NotFound")


class S3Store(RecordedObjects):
    def __init__(self, db: Database, url: str, *, endpoint_url: str | None = None) -> None:
        from botocore.exceptions import ClientError

        self.db = db
        rest = url.split("://", 1)[1]
        self.bucket, _, prefix = rest.partition("/")
        self.prefix = prefix.strip("/")
        self.client = _client(endpoint_url)
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if not _missing(exc):
                raise
            # A fresh S3-compatible server (MinIO, moto) starts empty; on AWS, create it beforehand.
            self.client.create_bucket(Bucket=self.bucket)
            logger.info("created bucket %s", self.bucket)

    def _key(self, key: str) -> str:
        key = checked_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, stream: BinaryIO, *, max_bytes: int | None = None) -> StoredArtifact:
        digest = hashlib.sha256()
        size = 0
        name = self._key(key)

        def next_part() -> bytes:
            nonlocal size
            data = read_limited(stream, PART_SIZE)
            size += len(data)
            if max_bytes is not None and size > max_bytes:
                raise ArtifactTooLarge(max_bytes)
            digest.update(data)
            return data

        first = next_part()
        if len(first) < PART_SIZE:
            self.client.put_object(Bucket=self.bucket, Key=name, Body=first)
        else:
            upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=name)["UploadId"]
            try:
                parts, data, number = [], first, 1
                while data:
                    etag = self.client.upload_part(Bucket=self.bucket, Key=name, PartNumber=number,
                                                   UploadId=upload_id, Body=data)["ETag"]
                    parts.append({"ETag": etag, "PartNumber": number})
                    data, number = next_part(), number + 1
                self.client.complete_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload_id,
                                                      MultipartUpload={"Parts": parts})
            except BaseException:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload_id)
                raise
        return self._record(key, size, digest.hexdigest())

    def iter_bytes(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        from botocore.exceptions import ClientError

        start, end = self._span(key, start, end)
        if start >= end:
            return
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key),
                                          Range=f"bytes={start}-{end - 1}")["Body"]
        except ClientError as exc:
            if _missing(exc):
                raise ArtifactMissing(f"{key}: recorded, but not in the object store") from exc
            raise
        remaining = end - start
        with body:
            for data in body.iter_chunks(READ_SIZE):
                remaining -= len(data)
                yield data
        if remaining != 0:
            raise ArtifactMissing(f"{key}: the object is shorter than recorded")

    def delete(self, key: str) -> None:
        with self.db.session() as s:
            s.execute(delete(Artifact).where(Artifact.key == key))
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))  # no error when already gone

    def local_file(self, key: str) -> str | None:
        return None

    def adopt(self, key: str, path: str, size: int, sha256: str) -> StoredArtifact | None:
        return None
