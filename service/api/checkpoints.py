"""Checkpoints: the kept ones, and the best one streamed as a `.keras` file or as its SavedModel export."""
from __future__ import annotations

import re
from collections.abc import Iterator

from flask import Blueprint, Response, jsonify, request, stream_with_context, url_for
from werkzeug.wsgi import wrap_file
from sqlalchemy import select
from sqlalchemy.orm import Session

from service.api.common import load_owned
from service.api.representations import checkpoint_resource
from service.services import services
from trainyard.db.exports import EXPORT_FORMATS, JobExport
from trainyard.db.models import FINAL_STATUSES, Checkpoint, Job
from service.errors import Conflict, Gone, NotFound, RangeNotSatisfiable, ValidationFailed
from trainyard.store import READ_SIZE, ArtifactMissing, ArtifactStore

bp = Blueprint("checkpoints", __name__)

# One range, ASCII digits only (RFC 9110 14.1.1). Anything else, several ranges included, is served whole.
_RANGE = re.compile(r"bytes=([0-9]*)-([0-9]*)", re.ASCII)
# An entity tag as RFC 9110 8.8.3 writes it: optionally weak, then quoted.
_ETAG = re.compile(r'\s*(W/)?("[\x21\x23-\x7e\x80-\xff]*")\s*')


@bp.get("/v1/jobs/<job_id>/checkpoints")
def list_checkpoints(job_id: str) -> Response:
    with services().db.read_session() as s:
        load_owned(s, Job, job_id)
        rows = s.execute(select(Checkpoint).where(Checkpoint.job_id == job_id).order_by(Checkpoint.epoch)).scalars()
        items = [checkpoint_resource(c) for c in rows]
    return jsonify({"checkpoints": items, "links": {"best": url_for("checkpoints.download_best", job_id=job_id)}})


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """One byte range as [start, end); None means serve the whole file (RFC 9110 lets a server ignore
    Range, and says to for an invalid one); a valid range that selects nothing is a 416."""
    m = _RANGE.fullmatch(header.strip())
    if not m or (m.group(1) == "" and m.group(2) == ""):
        return None
    # Past 19 digits a position is beyond any file: compare lengths, never int() an unbounded string.
    first = int(m.group(1)) if 0 < len(m.group(1)) <= 19 else (None if m.group(1) == "" else size)
    last = int(m.group(2)) if 0 < len(m.group(2)) <= 19 else (None if m.group(2) == "" else size)
    if first is None:  # a suffix: the last `last` bytes
        if last == 0:
            raise RangeNotSatisfiable("A suffix range of zero bytes selects nothing.",
                                      headers={"Content-Range": f"bytes */{size}"})
        return max(size - last, 0), size  # type: ignore[operator]
    if last is not None and last < first:
        return None  # invalid (last before first): ignored, the whole file is served
    if first >= size:
        raise RangeNotSatisfiable(f"The range starts beyond the file's {size} bytes.",
                                  headers={"Content-Range": f"bytes */{size}"})
    return first, size if last is None else min(last + 1, size)


def if_none_match(header: str | None, etag: str) -> bool:
    """Whether `If-None-Match` matches `etag`, by weak comparison (RFC 9110 13.1.2): `W/"x"` matches
    `"x"`; `*` matches anything. A malformed list matches nothing (the full answer is always safe)."""
    if header is None:
        return False
    if header.strip() == "*":
        return True
    ours = etag.removeprefix("W/")
    for item in header.split(","):
        m = _ETAG.fullmatch(item)
        if m and m.group(2) == ours:
            return True
    return False


def stream_artifact(store: ArtifactStore, key: str, size: int, sha256: str, filename: str,
                    mimetype: str = "application/octet-stream") -> Response:
    etag = f'"{sha256}"'
    if if_none_match(request.headers.get("If-None-Match"), etag):
        return Response(status=304, headers={"ETag": etag})
    start, end, status = 0, size, 200
    range_header = request.headers.get("Range")
    if_range = request.headers.get("If-Range")
    if range_header and (if_range is None or if_range.strip() == etag):
        parsed = _parse_range(range_header, size)
        if parsed is not None:
            start, end = parsed
            status = 206

    # A file lost from the store after it was recorded is found before the headers go out: once they
    # have, all a server can do is cut the body short.
    lost = Gone(f"{filename} is recorded but its bytes are missing from the artifact store (lost after it "
                "was stored); the operator's store needs repair, or the job must be trained again.")
    local = store.local_file(key)
    if local is not None and end == size:
        # A file on this machine, sent to its end: gunicorn hands it to the kernel (sendfile) from
        # `start`, with no copy through Python (other servers read it to the end in blocks).
        try:
            fh = open(local, "rb")  # noqa: SIM115 - closed by the WSGI server with the response
        except FileNotFoundError:
            raise lost from None
        fh.seek(start)
        resp = Response(wrap_file(request.environ, fh, READ_SIZE), status=status,
                        mimetype=mimetype, direct_passthrough=True)
    else:
        chunks = store.iter_bytes(key, start, end)
        try:
            first = next(chunks, b"")
        except ArtifactMissing:
            raise lost from None

        def body() -> Iterator[bytes]:
            yield first
            yield from chunks

        resp = Response(stream_with_context(body()), status=status, mimetype=mimetype,
                        direct_passthrough=True)
    resp.headers["Content-Length"] = str(end - start)
    resp.headers["ETag"] = etag
    resp.headers["Accept-Ranges"] = "bytes"
    resp.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    if status == 206:
        resp.headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    return resp


DOWNLOAD_FORMATS = ("keras", *EXPORT_FORMATS)


@bp.get("/v1/jobs/<job_id>/checkpoints/best")
def download_best(job_id: str) -> Response:
    fmt = request.args.get("format") or "keras"
    if fmt not in DOWNLOAD_FORMATS:
        raise ValidationFailed(
            f"Unknown format {fmt!r}; the best checkpoint downloads as {' or '.join(DOWNLOAD_FORMATS)}.",
            errors=[{"field": "query.format", "message": f"Must be one of: {', '.join(DOWNLOAD_FORMATS)}."}],
        )
    svc = services()
    with svc.db.read_session() as s:
        job = load_owned(s, Job, job_id)
        mimetype = "application/octet-stream"
        if fmt != "keras":
            key, size, sha, filename = _export(s, job, fmt)
            mimetype = "application/gzip"
        else:
            best = s.execute(
                select(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.is_best.is_(True))
            ).scalar_one_or_none()
            if best is None:
                raise NotFound(f"Job {job_id} has no checkpoint yet; one is written when the monitored value first improves.")
            key, size, sha = best.artifact_key, best.size_bytes, best.sha256
            filename = f"{job_id}-epoch{best.epoch:04d}.keras"
    return stream_artifact(svc.store, key, size, sha, filename, mimetype)


def _export(s: Session, job: Job, fmt: str) -> tuple[str, int, str, str]:
    """The worker's export of the final best checkpoint: (key, size, sha256, filename), or a problem."""
    if job.status not in FINAL_STATUSES:
        raise Conflict(f"Job {job.id} is {job.status}; its {fmt} export is made from the best checkpoint "
                       "when the job succeeds. Download the .keras checkpoint meanwhile.")
    row = s.get(JobExport, (job.id, fmt))
    # An export of an older checkpoint is not the best model: never serve it as one.
    if job.status != "succeeded" or row is None or row.epoch != job.best_epoch:
        raise NotFound(f"Job {job.id} has no {fmt} export: exports are made for jobs that succeed "
                       f"(this one is {job.status}), and an export that failed is in the worker's log.")
    return row.artifact_key, row.size_bytes, row.sha256, f"{job.id}-epoch{row.epoch:04d}.{fmt}.tar.gz"
