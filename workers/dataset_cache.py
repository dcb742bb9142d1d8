"""A worker's local cache of uploaded data sets, so a data set is fetched from the store once per machine.

Uploaded data sets never change (a new upload gets a new id and its own sha256), so a file named by its
sha256 is valid for as long as it exists. Sweeps and reruns train many jobs on one data set; without the
cache each job would stream the whole file out of Postgres or the object store again (seconds for a few
hundred megabytes). Files are written under a temporary name and renamed into place, so worker processes
sharing the folder never see half a file; the least recently used files are removed once the folder holds
more than its byte budget.
"""
from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path

from trainyard.store import ArtifactMissing, ArtifactStore, download_to

logger = logging.getLogger(__name__)


class DatasetCache:
    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder = folder
        self.max_bytes = max_bytes

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def fetch(self, store: ArtifactStore, key: str, sha256: str, size: int, suffix: str, fallback: Path) -> Path:
        """A local path holding the artifact's bytes: the cached file, fetched first if missing.

        With the cache disabled, or a file larger than the whole budget, the bytes go to ``fallback``
        (the job's own work folder) instead.
        """
        if not self.enabled or size > self.max_bytes:
            _download(store, key, sha256, fallback)
            return fallback
        path = self.folder / f"{sha256}{suffix}"
        try:
            if path.stat().st_size == size:
                os.utime(path)  # most recently used
                logger.info("data set %s from the local cache", key)
                return path
        except FileNotFoundError:
            pass
        self.folder.mkdir(parents=True, exist_ok=True)
        part = self.folder / f".{sha256}.{uuid.uuid4().hex}{suffix}"
        try:
            _download(store, key, sha256, part)  # checked before the file gets its name
            os.replace(part, path)
        finally:
            part.unlink(missing_ok=True)
        self._evict(keep=path)
        return path

    def _evict(self, keep: Path) -> None:
        files = []
        for entry in self.folder.iterdir():
            if entry.name.startswith("."):
                continue
            try:
                st = entry.stat()
            except FileNotFoundError:  # another worker evicted it meanwhile
                continue
            files.append((st.st_mtime, st.st_size, entry))
        total = sum(size for _, size, _ in files)
        for _, size, entry in sorted(files):
            if total <= self.max_bytes:
                break
            if entry == keep:
                continue
            # A worker still reading an evicted file keeps its open handle; the bytes go when it closes.
            entry.unlink(missing_ok=True)
            total -= size
            logger.info("evicted %s from the data set cache", entry.name)


def _download(store: ArtifactStore, key: str, sha256: str, path: Path) -> None:
    """download_to checks the bytes against the store's record; the data set row's sha256 must agree."""
    meta = download_to(store, key, path)
    if meta.sha256 != sha256:
        path.unlink(missing_ok=True)
        raise ArtifactMissing(f"{key}: stored bytes are not the data set that was uploaded")
