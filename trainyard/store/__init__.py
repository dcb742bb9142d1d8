"""The artifact store: checkpoints, resume backups, exports and uploaded data sets.

One small interface (`ArtifactStore`, base.py), one module per backend:
- database.py: the bytes as fixed-size chunk rows in the database (the default, `TRAINYARD_ARTIFACT_URL=db`).
- folder.py: the bytes in a folder or on any fsspec URL (`file:///srv/artifacts`).
- s3.py: the bytes on S3 or an S3-compatible server (MinIO, Ceph) through botocore.
- routing.py: which backend an artifact goes to (the URL, `TRAINYARD_ARTIFACT_DB_MAX_BYTES`) and, from its
  recorded location, where an existing one is read from.
- keys.py: the key layout, built by the server from ids (per training attempt), never from client input.

Each artifact's row in `artifacts` (size, sha256, `location`) says where its bytes are, so reads find
them whatever the settings are now, and a download is answered (ETag, Content-Length, Range) without
touching the bytes. Import from here: the names below are the store's public surface.
"""
from __future__ import annotations

from trainyard.store.base import (
    CHUNK_SIZE,
    IN_DB,
    IN_OBJECT_STORE,
    READ_SIZE,
    ArtifactMissing,
    ArtifactStore,
    ArtifactTooLarge,
    StoredArtifact,
    download_to,
    holds,
    put_file,
)
from trainyard.store.database import DatabaseStore
from trainyard.store.folder import FsspecStore
from trainyard.store.keys import backup_key, checkpoint_key, dataset_key, export_key, initial_weights_key
from trainyard.store.routing import RoutingStore, make_store, store_from_settings
from trainyard.store.s3 import S3Store

__all__ = [
    "CHUNK_SIZE",
    "IN_DB",
    "IN_OBJECT_STORE",
    "READ_SIZE",
    "ArtifactMissing",
    "ArtifactStore",
    "ArtifactTooLarge",
    "DatabaseStore",
    "FsspecStore",
    "RoutingStore",
    "S3Store",
    "StoredArtifact",
    "backup_key",
    "checkpoint_key",
    "dataset_key",
    "download_to",
    "export_key",
    "holds",
    "initial_weights_key",
    "make_store",
    "put_file",
    "store_from_settings",
]
