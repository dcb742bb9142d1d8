"""Data sets: uploads (.npz or .csv) validated before they are kept, and the built-in catalogue."""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any
from flask import Blueprint, Response, jsonify, request, url_for
from sqlalchemy import select

from service.api.common import SpooledUpload, load_owned, new_spool, receive_body, tenant_id
from service.api.representations import builtin_resource, dataset_resource
from service.errors import Conflict, LengthRequired, PayloadTooLarge, UnsupportedMediaType, ValidationFailed
from service.services import services
from trainyard.datasets import DatasetError, inspect_csv, inspect_npz
from trainyard.db.models import Dataset, Job, new_id
from trainyard.spec import BUILTIN_DATASETS
from trainyard.store import ArtifactTooLarge, dataset_key

logger = logging.getLogger(__name__)

bp = Blueprint("datasets", __name__)

FORMATS = ("npz", "csv")


def _upload_error(exc: DatasetError, target_field: str) -> ValidationFailed:
    """The check's 422; its errors about the target column name the field the column came in."""
    errors = [{**e, "field": target_field} if e.get("field") == "target" else e for e in exc.errors or []]
    return ValidationFailed(exc.detail, errors=errors)


# A data set sent as the whole request body (the form's fields then come as query parameters): no multipart
# parsing, the body read by its Content-Length into the spool file (service.api.common.receive_body). The
# client uploads this way; a multipart form (`curl -F file=@x.npz`) is taken as well.
RAW_TYPES = {"application/octet-stream": None, "application/x-npz": "npz", "text/csv": "csv"}


@bp.post("/v1/datasets")
def upload_dataset() -> tuple[Response, int, dict[str, str]]:
    svc = services()
    limit = svc.settings.max_upload_bytes
    if request.content_length is not None and request.content_length > limit + 1024 * 1024:
        raise PayloadTooLarge(f"Uploads are limited to {limit} bytes.")
    mimetype = request.mimetype
    raw = mimetype in RAW_TYPES
    if raw:
        stream, original, fields = _raw_upload(limit), request.args.get("name"), request.args
    elif mimetype == "multipart/form-data":
        upload = request.files.get("file")
        if upload is None:
            raise ValidationFailed("Send the data set as a multipart form field named 'file'.",
                                   errors=[{"field": "file", "message": "Missing file."}])
        stream, original, fields = upload.stream, upload.filename, request.form
    else:
        raise UnsupportedMediaType(
            "Send the data set as the body with 'Content-Type: application/octet-stream' (or application/x-npz, "
            "text/csv), or as the field 'file' of a multipart/form-data body.")
    try:
        return _keep_upload(svc, stream, original, fields, raw=raw)
    finally:
        stream.close()


def _raw_upload(limit: int) -> SpooledUpload:
    """The request body, spooled to a file in the var folder (hashed as it is written)."""
    length = request.content_length
    if length is None:
        raise LengthRequired("Send the data set's size in a Content-Length header.")
    if length > limit:
        raise PayloadTooLarge(f"Uploads are limited to {limit} bytes.")
    spool = new_spool()
    try:
        receive_body(spool, length)
    except BaseException:
        spool.close()
        raise
    return spool


def _keep_upload(svc: Any, stream: Any, original: str | None, fields: Mapping[str, str], *,
                 raw: bool) -> tuple[Response, int, dict[str, str]]:
    """Validate the spooled upload, store it and record it: the 201 of either form of upload. `fields` are
    the query parameters when the body is the file (`raw`), the form's fields otherwise."""
    # The client's file name is kept as a label only; it never becomes a path.
    original = "".join(ch for ch in os.path.basename(original or "") if ch.isprintable())
    original = original.strip()[:256] or "upload"
    where, target_field = ("query parameter", "query.target") if raw else ("form field", "target")
    body_format = RAW_TYPES[request.mimetype] if raw else None
    fmt = (fields.get("format") or body_format or original.rsplit(".", 1)[-1]).lower()
    if fmt not in FORMATS:
        raise ValidationFailed(f"The file must be a .npz or .csv file (or say which with the {where} 'format').",
                               errors=[{"field": "file", "message": "Use a .npz or .csv file."}])
    target = fields.get("target")
    if target is not None and (not target.isprintable() or len(target) > 1000):
        raise ValidationFailed(f"The {where} 'target' must be a column name: printable text, at most 1000 "
                               "characters.", errors=[{"field": target_field, "message": "Not a column name."}])
    if fmt == "csv" and not target:
        raise ValidationFailed(f"A CSV upload needs the {where} 'target' naming the column to predict.",
                               errors=[{"field": target_field, "message": "Missing target column name."}])
    # The upload is already on disk (service.api.common.SpooledUpload): validate and store that file, read
    # twice, never held in memory and never copied.
    path = stream.name
    stream.seek(0, os.SEEK_END)
    size = stream.tell()
    if size > svc.settings.max_upload_bytes:
        raise PayloadTooLarge(f"Uploads are limited to {svc.settings.max_upload_bytes} bytes.")
    try:
        if fmt == "npz":
            summary = inspect_npz(path, max_decompressed_bytes=svc.settings.max_dataset_bytes)
        else:
            summary = inspect_csv(path, target=target or "", max_bytes=svc.settings.max_upload_bytes)
    except DatasetError as exc:
        raise _upload_error(exc, target_field) from None
    info = summary.to_dict()
    if fmt == "csv":
        info["target"] = target
    # The id is needed now, for the artifact key: the column default would only fill it at flush.
    row = Dataset(id=new_id("ds"), tenant_id=tenant_id(), name=original, format=fmt, artifact_key="",
                  size_bytes=size, sha256="", info=info)
    row.artifact_key = dataset_key(row.id)
    meta = None
    if isinstance(stream, SpooledUpload) and stream.size == size:
        # A folder store on this filesystem takes the spooled file as it is (hashed while it was written).
        meta = svc.store.adopt(row.artifact_key, path, size, stream.sha256())
    if meta is None:
        stream.seek(0)
        try:
            meta = svc.store.put(row.artifact_key, stream, max_bytes=svc.settings.max_upload_bytes)
        except ArtifactTooLarge:
            raise PayloadTooLarge(f"Uploads are limited to {svc.settings.max_upload_bytes} bytes.") from None
    row.size_bytes, row.sha256 = meta.size, meta.sha256
    with svc.db.session() as s:
        s.add(row)
    return jsonify(dataset_resource(row)), 201, {"Location": url_for("datasets.get_dataset", dataset_id=row.id)}


@bp.get("/v1/datasets")
def list_datasets() -> Response:
    with services().db.session() as s:
        rows = s.execute(
            select(Dataset).where(Dataset.tenant_id == tenant_id()).order_by(Dataset.created_at.desc())
        ).scalars()
        uploaded = [dataset_resource(r) for r in rows]
    builtins = [builtin_resource(info) for info in BUILTIN_DATASETS.values()]
    return jsonify({"datasets": uploaded + builtins})


@bp.get("/v1/datasets/<dataset_id>")
def get_dataset(dataset_id: str) -> Response:
    if dataset_id in BUILTIN_DATASETS:
        return jsonify(builtin_resource(BUILTIN_DATASETS[dataset_id]))
    with services().db.session() as s:
        return jsonify(dataset_resource(load_owned(s, Dataset, dataset_id)))


@bp.delete("/v1/datasets/<dataset_id>")
def delete_dataset(dataset_id: str) -> tuple[str, int]:
    svc = services()
    if dataset_id in BUILTIN_DATASETS:
        raise Conflict(f"{dataset_id} is built into the service and cannot be deleted.")
    with svc.db.session() as s:
        row = load_owned(s, Dataset, dataset_id)
        active = s.execute(
            select(Job.id).where(Job.tenant_id == row.tenant_id, Job.status.in_(("queued", "running")),
                                 Job.spec["dataset"]["id"].as_string() == dataset_id).limit(1)
        ).scalar_one_or_none()
        if active:
            raise Conflict(f"Job {active} still uses data set {dataset_id}; wait for it to end or cancel it.")
        key = row.artifact_key
        s.delete(row)
    svc.store.delete(key)
    return "", 204
