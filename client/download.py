"""Resumable, verified download of a job's best checkpoint (the `.keras` file or its SavedModel archive).

The server's ETag is the quoted SHA-256 of the file and it honours `Range` guarded by `If-Range`, so a
partial `<path>.part` can be continued safely: if the best checkpoint changed meanwhile, `If-Range` makes
the server send the whole new file instead of a range of it.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from client.errors import ChecksumMismatch, TrainyardError

if TYPE_CHECKING:
    from client.api import Trainyard

CHUNK = 1 << 16


@dataclass(frozen=True)
class Download:
    path: Path
    sha256: str
    size: int
    resumed_from: int  # bytes reused from an existing .part (0: downloaded whole)
    restarted: bool  # an existing .part was discarded (it did not verify, or did not fit)


def _hash_file(path: Path) -> Any:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
    return h


def _fetch(ty: Trainyard, job_id: str, part: Path, on_progress: Callable[[int, int], Any] | None,
           etag_hint: str | None, fmt: str = "keras") -> tuple[str, str, int, int, bool]:
    """Download into `part`, resuming it when possible.

    Returns (sha256 of the bytes, sha256 the ETag names, size, bytes resumed, whether a .part was dropped).
    """
    offset = part.stat().st_size if part.exists() else 0
    discarded = False
    headers = {}
    if offset and etag_hint:
        headers = {"Range": f"bytes={offset}-", "If-Range": f'"{etag_hint}"'}
    url = f"/v1/jobs/{job_id}/checkpoints/best" + ("" if fmt == "keras" else f"?format={fmt}")
    try:
        resp = ty.request("GET", url, ok=(200, 206), headers=headers, stream=True)
    except TrainyardError as exc:
        if exc.status != 416:  # the .part is longer than the file: it cannot be a prefix of it
            raise
        part.unlink()
        offset, discarded = 0, True
        resp = ty.request("GET", url, stream=True)
    with resp:
        etag = resp.headers.get("ETag", "").strip().strip('"')
        length = int(resp.headers.get("Content-Length", 0))
        if resp.status_code == 206:
            hasher, mode = _hash_file(part), "ab"
        else:
            discarded = discarded or offset > 0  # If-Range did not match: a new best replaced the old one
            hasher, mode, offset = hashlib.sha256(), "wb", 0
        total, done = offset + length, offset
        if on_progress:
            on_progress(done, total)
        with part.open(mode) as fh:
            for chunk in resp.iter_content(CHUNK):
                fh.write(chunk)
                hasher.update(chunk)
                done += len(chunk)
                if on_progress:
                    on_progress(done, total)
    return hasher.hexdigest(), etag, done, offset, discarded


def _etag(ty: Trainyard, job_id: str, fmt: str) -> str | None:
    """The SHA-256 the server names for an export, from a HEAD request (no body)."""
    resp = ty.request("HEAD", f"/v1/jobs/{job_id}/checkpoints/best?format={fmt}")
    resp.close()
    return resp.headers.get("ETag", "").strip().strip('"') or None


def download_verified(ty: Trainyard, job_id: str, path: Path,
                      on_progress: Callable[[int, int], Any] | None = None, fmt: str = "keras") -> Download:
    """`fmt` "keras" is the checkpoint itself, also checked against the checkpoint listing; "savedmodel"
    its SavedModel archive, checked against the ETag alone (a .part of it is resumed only while the
    server's ETag still names the same archive)."""
    part = path.with_name(path.name + ".part")
    listed_sha = None
    if fmt == "keras":
        best = [c for c in ty.checkpoints(job_id) if c["is_best"]]
        listed_sha = best[0]["sha256"] if best else None
    else:
        listed_sha = _etag(ty, job_id, fmt) if part.exists() else None
    sha, etag, size, resumed, restarted = _fetch(ty, job_id, part, on_progress, listed_sha, fmt)
    if sha != etag and resumed:
        # The bytes kept from before were not a prefix of this file: start over once.
        part.unlink()
        restarted = True
        sha, etag, size, resumed, _ = _fetch(ty, job_id, part, on_progress, None, fmt)
    if sha != etag:
        part.unlink(missing_ok=True)
        raise ChecksumMismatch("Checksum mismatch", f"downloaded {size} bytes with SHA-256 {sha}, "
                               f"but the server's ETag says {etag}")
    if fmt == "keras" and sha != listed_sha:
        # A running job may have found a new best between the listing and the download.
        listed = {c["sha256"] for c in ty.checkpoints(job_id) if c["is_best"]}
        if sha not in listed:
            part.unlink(missing_ok=True)
            raise ChecksumMismatch("Checksum mismatch", f"the downloaded file's SHA-256 {sha} is not the "
                                   "best checkpoint's in the job's checkpoint listing")
    os.replace(part, path)
    return Download(path=path, sha256=sha, size=size, resumed_from=resumed, restarted=restarted)
